"""How fast the dashboard loads with ten replicas and a day of series data, measured by Chromium itself.

portero runs in this test's event loop (the daemon's own `serve`), so its monitor can be handed a series store
already holding a day of samples, written through the store's own `add` with past timestamps (a fake clock).
The figure is the Navigation Timing API's: from navigation start to the first render with data
(`portero:rendered`), and to the load event. The assertion is generous (a shared 2-core machine); the figures
are printed for docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
from pathlib import Path

import httpx
import pytest

from portero.api.dashboard import CHART_SERIES
from portero.daemon import serve
from portero.monitor.monitor import Monitor
from portero.monitor.series import SeriesStore
from portero.runtimes.ports import free_port
from tests.conftest import require_tool
from tests.integration.test_dashboard import CHROMIUM_ARGS

pytestmark = pytest.mark.integration
TINY = Path(__file__).parents[1] / "fixtures" / "tiny_app.py"
REPLICAS = 10
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
                value = {"service_error_ratio": 0.01 * wave, "service_latency_p95_seconds": 0.02 + 0.05 * wave}.get(
                    name, REPLICAS if "replicas" in name else 40 * wave
                )
                store.add(name, {"service": service}, value, at)
            else:
                for index, replica in enumerate(replicas):
                    value = 5 + 10 * wave + index if "cpu" in name else 30e6 + 1e6 * index
                    store.add(name, {"service": service, "replica": replica}, value, at)
    return store


async def test_the_dashboard_loads_in_under_a_second_with_ten_replicas_and_a_day_of_series(tmp_path):
    chromium = require_tool("chromium", "the dashboard's load-time measurement")
    from playwright.async_api import async_playwright

    admin_port = free_port()
    spec = {
        "admin": {"port": admin_port},
        "router": {"port": free_port(avoid={admin_port})},
        "monitoring": {"interval_s": 1},
        "services": {
            "tiny": {
                "command": [sys.executable, str(TINY)],
                "health": {"interval_s": 1},
                "replicas": {"initial": REPLICAS, "min": 0, "max": REPLICAS},
            }
        },
    }
    spec_file = tmp_path / "portero.yaml"
    spec_file.write_text(json.dumps(spec))
    started: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def on_started(control: object) -> None:
        started.set_result(control)

    daemon = asyncio.ensure_future(serve(spec_file, tmp_path / "state", on_started))
    url = f"http://127.0.0.1:{admin_port}/scalability"
    try:
        control = await asyncio.wait_for(started, 60)
        monitor = next(f.__self__ for f in control.on_applied if isinstance(getattr(f, "__self__", None), Monitor))  # type: ignore[attr-defined]
        token = (tmp_path / "state" / "admin.token").read_text().strip()
        bearer = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(trust_env=False, timeout=10, headers=bearer) as client:
            for _ in range(300):
                found = (await client.get(f"{url}/containers/list")).json()["containers"]
                if sum(r["state"] == "ready" for r in found) == REPLICAS:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("10 replicas never got ready")
        monitor.store = a_day_of(monitor, "tiny", [r["id"] for r in found], monitor.clock())

        figures: dict[str, list[float]] = {}
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for view in ("", "?window=86400"):
                for _ in range(3):
                    # A fresh browser context each time: a cold cache, signed in as the login form would
                    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
                    await context.add_init_script(f"sessionStorage.setItem('portero.token', {json.dumps(token)})")
                    page = await context.new_page()
                    await page.goto(f"{url}/dashboard{view}")
                    rendered = 0.0
                    for _ in range(100):
                        rendered = await page.evaluate(
                            "() => performance.getEntriesByName('portero:rendered')[0]?.startTime || 0"
                        )
                        if rendered:
                            break
                        await asyncio.sleep(0.05)
                    load = await page.evaluate("() => performance.getEntriesByType('navigation')[0].loadEventEnd")
                    drawn = await page.evaluate("() => Number(document.querySelector('#chart-cpu').dataset.points)")
                    rows = await page.locator(".service[data-service=tiny] tbody tr").count()
                    assert rendered > 0, "the page never rendered its data"
                    assert rows == REPLICAS
                    assert drawn >= REPLICAS * 50, drawn  # a day of ten replicas' CPU lines, downsampled
                    sizes = await page.evaluate(
                        "() => performance.getEntriesByType('resource')"
                        ".concat(performance.getEntriesByType('navigation'))"
                        ".map(e => [e.name.split('/scalability/')[1], e.encodedBodySize, Math.round(e.duration)])"
                    )
                    figures.setdefault(f"rendered{view}", []).append(rendered)
                    figures.setdefault(f"load{view}", []).append(load)
                    await context.close()
            await browser.close()
        print("resources (path, bytes, ms) of the last load:", sizes)
        print("dashboard load, ms (navigation start to):", {k: [round(v) for v in vs] for k, vs in figures.items()})
        for key, values in figures.items():
            assert statistics.median(values) < 3000, (key, values)  # generous: the acceptance figure is 1 s
    finally:
        admin = (tmp_path / "state" / "admin.token").read_text().strip()
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            try:
                await client.post(f"{url}/shutdown", headers={"Authorization": f"Bearer {admin}"})
            except httpx.HTTPError:
                daemon.cancel()
        await asyncio.wait_for(asyncio.shield(daemon), 30)
