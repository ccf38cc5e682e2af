"""A real Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port for the tests, without clustering,
routing every alert to one webhook receiver of the test's own."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.local_server import LocalServer
from tests.webhook_receiver import Receiver


class AlertmanagerServer(LocalServer):
    log_name = "alertmanager.log"

    def __init__(self, executable: str, directory: Path, receiver: Receiver) -> None:
        super().__init__(executable, directory)
        self.receiver = receiver

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {  # JSON is YAML; notifications go out at once and again on every change
            "route": {"receiver": "test", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s"},
            "receivers": [{"name": "test", "webhook_configs": [{"url": self.receiver.url, "send_resolved": True}]}],
        }
        (self.directory / "alertmanager.yml").write_text(json.dumps(config))
        args = [
            self.executable,
            f"--config.file={self.directory / 'alertmanager.yml'}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip port, no peers
        ]
        self.process = subprocess.Popen(
            args, stdout=(self.directory / "alertmanager.log").open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"alertmanager exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"alertmanager did not answer on port {self.port} within {timeout} s: {self.log()}")

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every notification Alertmanager sent (webhook payload, version 4)."""
        return self.receiver.bodies

    def alerts(self) -> list[dict[str, Any]]:
        """What Alertmanager's own API lists (active ones: a resolved alert leaves the list)."""
        response = httpx.get(f"{self.url}/api/v2/alerts", timeout=5, trust_env=False)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found
