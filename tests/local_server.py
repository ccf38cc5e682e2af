"""What the tests' own servers (redis-server, Alertmanager) share: a free loopback port, a directory, a log, a stop."""

from __future__ import annotations

import subprocess
from pathlib import Path

from portero.runtimes.ports import free_port


class LocalServer:
    log_name = "server.log"

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.directory / self.log_name
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
