"""The screenshots of docs/dashboard.md, from a real portero: the portal demo under a load that makes the
autoscaler move, a deployment, a firing alert; then Chromium takes the page in English and in Spanish.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.chromium import CHROMIUM_ARGS  # noqa: E402
from tests.integration.portero_cli import Portero, portal_service  # noqa: E402
from tests.integration.test_dashboard import Traffic, until  # noqa: E402

from portero.api.dashboard import load_assets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    weight = {name: len(asset.body) for name, asset in load_assets().items()}
    print("page weight:", weight, "total", sum(weight.values()))
    with tempfile.TemporaryDirectory() as tmp:
        portero = Portero(Path(tmp))
        service = portal_service(
            replicas=1,
            env={"WEB_CONCURRENCY": "1"},
            autoscale={"cpu_percent": None, "in_flight": 1, "tick_s": 1, "stabilization_s": 15},
        )
        service["replicas"] = {"initial": 1, "min": 1, "max": 4}
        service["health"]["start_period_s"] = 10
        portero.write_spec(
            {"portal": service},
            autoscale={"enabled": True},
            monitoring={"interval_s": 1},
            deploy={"strategy": "rolling", "progress_deadline_s": 60},
            alerts={
                "rules": [
                    {
                        "name": "portal-busy",
                        "metric": "service_requests_per_second",
                        "aggregate": "avg",
                        "window_s": 5,
                        "threshold": 3,
                        "for_s": 2,
                        "severity": "info",
                        "summary": "{service} answers {value} requests/s",
                    }
                ]
            },
        )
        portero.cli("up", "--detach")
        try:
            portero.ready(1)
            light = Traffic(f"http://127.0.0.1:{portero.router_port}/work?ms=5", clients=1, pause_s=0.1)
            time.sleep(20)
            heavy = Traffic(f"http://127.0.0.1:{portero.router_port}/work?ms=80", clients=4, pause_s=0.0)
            time.sleep(25)
            started = portero.http.post(f"{portero.url}/deploy", json={"service": "portal", "version": "v2"}).json()
            portero.wait(
                "the deployment",
                lambda: portero.get(f"/deployments/{started['id']}")["state"] != "running",
                timeout_s=120,
                step_s=1,
            )
            time.sleep(15)
            heavy.close()
            time.sleep(25)  # the autoscaler scales back down; the light load keeps the alert firing
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1000}, locale="en-US")
                page.goto(f"{portero.url}/dashboard")
                page.wait_for_selector("#login[open]")  # no token yet: the page asks for one
                page.fill("#token", portero.token)
                page.click("#login-submit")
                until(page, "data", "() => Number(document.querySelector('#chart-rps').dataset.points) > 0")
                time.sleep(3)
                page.screenshot(path=str(args.out / "dashboard.png"), full_page=True)
                page.click("#lang")
                time.sleep(2.5)
                page.screenshot(path=str(args.out / "dashboard-es.png"), full_page=True)
                browser.close()
            light.close()
            print(portero.cli("autoscaler", check=False).stdout)
        finally:
            portero.stop()
    print("wrote", args.out / "dashboard.png", args.out / "dashboard-es.png")


if __name__ == "__main__":
    main()
