"""Run a Router alone in its own process, so a test can measure its memory without the test's own.

`python run_router.py '{"settings": {...}, "services": {"app": ["127.0.0.1:PORT"]}}'` prints the router's
port, then serves until its stdin closes (or SIGTERM). Each line `stats` on its stdin gets one JSON line back:
the endpoints' snapshots, the service's counters, the requests the router counts as active, its open descriptors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import uvloop

from portero.router.server import Router
from portero.spec.models import RouterSettings, ServiceSpec


async def main(config: dict[str, object]) -> None:
    settings_values = dict(config.get("settings") or {})  # type: ignore[call-overload]
    settings = RouterSettings.model_validate(settings_values).model_copy(update={"port": 0})
    services = {
        name: ServiceSpec.model_validate(
            {
                "endpoints": [{"address": address, "weight": 1} for address in addresses],
                "balance": {"slow_start_s": 0},
                "health": {"path": "/__health"},
            }
        )
        for name, addresses in dict(config["services"]).items()  # type: ignore[call-overload]
    }
    router = Router(settings)
    await router.start()
    router.apply(settings, services)
    print(router.address[1], flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):  # until the test closes our stdin
        if line.strip() == "stats":
            print(json.dumps(stats(router)), flush=True)
    await router.stop(grace_s=0.5)


def stats(router: Router) -> dict[str, object]:
    now = router.now()
    return {
        "endpoints": [e.snapshot(now) for s in router.services.values() for e in s.endpoints.values()],
        "services": {name: s.stats.counters.as_dict() for name, s in router.services.items()},
        "active": router.active,
        "fds": len(os.listdir("/proc/self/fd")),
    }


if __name__ == "__main__":
    uvloop.run(main(json.loads(sys.argv[1])))
