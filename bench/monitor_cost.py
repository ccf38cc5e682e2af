"""What monitoring costs: portero's own CPU spent by the monitor with 10 replicas, as a share of one core.

Starts 10 small replicas (`python -m http.server`, each under the replica shim) with the process runtime, a
router with those 10 endpoints, and the real `Monitor` (every collector, the series, the built-in rules) at
`monitoring.interval_s`. Measures this process' CPU time (all threads: `to_thread` work included) over
`--duration` seconds with the monitor running, and over the same time without it (the event loop idling
beside the same replicas), and prints the difference per second of wall time. Neither run sends traffic.
The acceptance limit is 3 % of one core.

    .venv/bin/python bench/monitor_cost.py [--duration 30] [--replicas 10] [--interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvloop

from portero.monitor.monitor import Monitor
from portero.replicas import Process, Replica, ReplicaState
from portero.router.server import ReplicaEndpoint, Router
from portero.runtimes.base import Launch
from portero.runtimes.process import ProcessRuntime
from portero.spec.models import Spec
from portero.store.base import ServiceRecord


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(duration_s: float) -> float:
    """CPU seconds of this process per wall second while the loop runs whatever is spawned."""
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    await asyncio.sleep(duration_s)
    return (cpu_seconds() - start_cpu) / (time.perf_counter() - start_wall)


async def start_replicas(runtime: ProcessRuntime, count: int) -> list[Replica]:
    replicas = []
    for index in range(count):
        replica_id = f"bench-1-{index:04x}"
        command = (sys.executable, "-m", "http.server", "$PORT", "--bind", "127.0.0.1")
        process: Process = await runtime.start(Launch(replica_id, "bench", 1, command))
        replicas.append(Replica(replica_id, "bench", 1, ReplicaState.READY, process, started_at=time.time()))
    await asyncio.sleep(1.0)  # let them come up
    return replicas


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="portero-monitor-bench-") as tmp:
        state = Path(tmp)
        runtime = ProcessRuntime(state)
        spec = Spec.model_validate(
            {
                "monitoring": {"interval_s": args.interval},
                "router": {"port": 1},  # never started: only its registry and counters are read
                "services": {"bench": {"command": "true", "replicas": {"initial": args.replicas, "max": 100}}},
            },
            strict=False,
        )
        replicas = await start_replicas(runtime, args.replicas)
        try:
            router = Router(spec.router)
            router.apply(spec.router, spec.services)
            endpoints = [ReplicaEndpoint(r.id, r.process.host, r.process.port) for r in replicas if r.process]
            router.sync_replicas("bench", endpoints)

            async def record(_event: Any) -> None:
                return None

            control: Any = SimpleNamespace(
                spec=spec,
                runtime=runtime,
                supervisor=SimpleNamespace(replicas=replicas, record=record),
                records={"bench": ServiceRecord("bench", args.replicas, args.replicas, 1)},
                on_applied=[],
            )
            baseline = await measure(args.duration)
            monitor = Monitor(control, router, state, "http://127.0.0.1:9900")
            await monitor.start()
            await asyncio.sleep(2 * args.interval)  # first passes prime psutil's counters
            passes_before = monitor.passes
            durations: list[float] = []

            async def watch() -> None:
                while True:
                    await asyncio.sleep(args.interval)
                    durations.append(monitor.collect_seconds)

            watcher = asyncio.ensure_future(watch())
            with_monitor = await measure(args.duration)
            watcher.cancel()
            passes = monitor.passes - passes_before
            series, nbytes = len(monitor.store.series), monitor.store.nbytes()
            await monitor.stop()
        finally:
            for replica in replicas:
                if replica.process is not None:
                    await runtime.stop(replica.id, replica.process, grace_s=2)
    cost = 100 * (with_monitor - baseline)
    print(f"replicas: {args.replicas}, interval: {args.interval:g} s, duration: {args.duration:g} s per run")
    print(
        f"passes: {passes}; pass wall time: median {1000 * statistics.median(durations):.1f} ms, "
        f"max {1000 * max(durations):.1f} ms"
    )
    print(f"series: {series} in {nbytes / (1 << 20):.2f} MiB")
    print(f"portero CPU without the monitor: {100 * baseline:.2f} % of one core")
    print(f"portero CPU with the monitor:    {100 * with_monitor:.2f} % of one core")
    print(f"monitor cost:                    {cost:.2f} % of one core (limit 3 %)")
    if cost >= 3.0:
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    uvloop.run(main(parser.parse_args()))
