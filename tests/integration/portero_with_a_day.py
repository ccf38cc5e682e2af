"""portero's daemon whose monitor holds a day of every chart series: the dashboard load-time test's server.

A process of its own, as `portero up` is (uvloop, its own event loop and GIL), so the browser and the test do
not share portero's loop. Once every replica of the spec is ready, the monitor is handed a series store already
holding a day of samples, written through the store's own `add` with past timestamps (a fake clock); then the
file `day-ready` appears in the state directory.

    python -m tests.integration.portero_with_a_day SPEC STATE_DIR SERVICE REPLICAS
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from pathlib import Path

import uvloop

from portero.api.dashboard import CHART_SERIES
from portero.control import ControlPlane
from portero.daemon import serve
from portero.monitor.monitor import Monitor
from portero.monitor.series import SeriesStore
from portero.replicas import ReplicaState

DAY_S = 86_400


def a_day_of(monitor: Monitor, service: str, replicas: list[str], now: float) -> SeriesStore:
    """A store like the monitor's, holding a day of every chart series: a sample a minute for the day, and one
    every 5 s for the last hour (the fine ring), the shapes of a slow daily wave."""
    store = SeriesStore(monitor.store.fine, monitor.store.coarse, monitor.store.budget_bytes)
    times = [now - DAY_S + m * 60 for m in range(DAY_S // 60 - 60)] + [now - 3600 + s * 5 for s in range(720)]
    for at in times:
        wave = 1 + math.sin((at % DAY_S) / DAY_S * 2 * math.pi)
        for name in CHART_SERIES:
            if name.startswith("service_"):
                ratios = {"service_error_ratio": 0.01 * wave, "service_client_error_ratio": 0.02 * wave}
                value = {**ratios, "service_latency_p95_seconds": 0.02 + 0.05 * wave}.get(
                    name, len(replicas) if "replicas" in name else 40 * wave
                )
                store.add(name, {"service": service}, value, at)
            else:
                for index, replica in enumerate(replicas):
                    value = 5 + 10 * wave + index if "cpu" in name else 30e6 + 1e6 * index
                    store.add(name, {"service": service, "replica": replica}, value, at)
    return store


async def main(spec: Path, state: Path, service: str, count: int) -> None:
    async def fill(control: ControlPlane, monitor: Monitor) -> None:
        while True:
            ready = [r.id for r in control.supervisor.replicas if r.state is ReplicaState.READY]
            if len(ready) >= count:
                break
            await asyncio.sleep(0.1)
        monitor.store = a_day_of(monitor, service, ready, monitor.clock())
        (state / "day-ready").write_text("\n".join(ready))

    await serve(spec, state, fill)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, filename=str(Path(sys.argv[2]) / "portero.log"))
    uvloop.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
