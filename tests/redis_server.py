"""A real `redis-server` on a loopback port for the tests: started, stopped and restarted on the same port."""

from __future__ import annotations

import socket
import subprocess
import time

from tests.local_server import LocalServer


class RedisServer(LocalServer):
    """One redis-server process without persistence, in its own directory; `stop()`/`start()` keep the port."""

    log_name = "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--protected-mode", "no"]
        self.process = subprocess.Popen(
            args, stdout=(self.directory / "redis.log").open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s: {self.log()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False
