"""Run a Router alone in its own process, so a test can measure its memory without the test's own.

`python run_router.py '{"settings": {...}, "services": {"app": ["127.0.0.1:PORT"]}}'` prints the router's
port, then serves until its stdin closes (or SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
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
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await router.stop(grace_s=0.5)


if __name__ == "__main__":
    uvloop.run(main(json.loads(sys.argv[1])))
