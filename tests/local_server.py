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
        if self.process is not None:
            terminate(self.process)
        self.process = None

    def log(self) -> str:
        path = self.directory / self.log_name
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
