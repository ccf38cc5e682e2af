"""Drive a real `portero` through its CLI, in its own state directory, on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from portero.runtimes.ports import free_port

ROOT = Path(__file__).parents[2]
PORTAL = ROOT / "examples" / "portal"


def portal_service(replicas: int = 3, **extra: Any) -> dict[str, Any]:
    service: dict[str, Any] = {
        "workdir": str(PORTAL),
        "command": "gunicorn -c gunicorn.conf.py --bind 127.0.0.1:${PORT} main:app",
        "version": "v1",
        "env": {"WEB_CONCURRENCY": "1"},
        "replicas": {"initial": replicas, "min": 0, "max": 10},
        "health": {"interval_s": 1, "start_period_s": 20},
        "stop_grace_s": 5,
    }
    service.update(extra)
    return service


class SavedToken(httpx.Auth):
    """Sends the admin token `portero up` saved in the state directory (read when first needed: the instance
    writes it at its first start)."""

    def __init__(self, state: Path) -> None:
        self.state = state

    @property
    def token(self) -> str:
        return (self.state / "admin.token").read_text().strip()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with contextlib.suppress(FileNotFoundError):  # not started yet: the request goes without, and gets a 401
            request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class Portero:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.dir = tmp
        self.env = env or {}  # extra environment of every command (REDIS_URL, say)
        self.state = tmp / "state"
        self.spec_file = tmp / "portero.yaml"
        self.admin_port = free_port()
        self.router_port = free_port(avoid={self.admin_port})
        self.url = f"http://127.0.0.1:{self.admin_port}/scalability"
        self.auth = SavedToken(self.state)
        self.http = httpx.Client(trust_env=False, timeout=10, auth=self.auth)

    @property
    def token(self) -> str:
        """The admin token (the one the CLI sends)."""
        return self.auth.token

    def write_spec(self, services: dict[str, Any], router: dict[str, Any] | None = None, **top: Any) -> None:
        router = {"port": self.router_port, **(router or {})}
        spec = {"admin": {"port": self.admin_port}, "router": router, "services": services, **top}
        self.spec_file.write_text(json.dumps(spec))  # JSON is YAML

    def cli(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "portero", "--state-dir", str(self.state), *args]
        if args and args[0] not in {"logs", "token"}:
            command += ["--file", str(self.spec_file)]
        env = {**os.environ, "COLUMNS": "200", **self.env}
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.dir)
        if check and result.returncode != 0:
            if args[:2] == ("up", "--detach"):  # a fixture that fails here never reaches its teardown
                self.kill_everything()
            raise AssertionError(f"portero {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(self.url + path, params=params)
        response.raise_for_status()
        return response.json()

    def replicas(self) -> list[dict[str, Any]]:
        return self.get("/containers/list")["containers"]

    def events(self, **params: Any) -> list[dict[str, Any]]:
        return self.get("/events", limit=1000, **params)["events"]

    def pid(self) -> int:
        return int((self.state / "portero.lock").read_text())

    def router_processes(self) -> dict[str, Any]:
        """The router's parent and workers, as `GET /router` reports them."""
        result: dict[str, Any] = self.get("/router")
        return result

    def wait(self, what: str, predicate: Callable[[], Any], timeout_s: float = 15, step_s: float = 0.05) -> Any:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                value = predicate()
            except (httpx.HTTPError, KeyError, IndexError):
                value = None
            if value:
                return value
            time.sleep(step_s)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def ready(self, count: int) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            ready = [r for r in self.replicas() if r["state"] == "ready"]
            return ready if len(ready) == count else None

        result: list[dict[str, Any]] = self.wait(f"{count} ready replicas", check, timeout_s=30)
        return result

    def group_pids(self) -> set[int]:
        """Every process in the replicas' process groups (the shim, the app, its workers)."""
        groups = {r["pid"] for r in self.replicas() if r["pid"]}
        return {p.pid for p in psutil.process_iter() if _pgid(p.pid) in groups}

    def stop(self) -> None:
        """Teardown. The process runtime: SIGKILL portero, its router and every replica of this state directory,
        at once (a graceful `portero down` here took 3-18 s per test on a busy machine, about a quarter of the
        suite; `down` itself is tested on its own: test_down, test_portero, test_isolation). The docker and swarm
        runtimes: `portero down` if it runs, which removes their containers and services; then the same SIGKILL
        for whatever a failed test left behind."""
        if (self.state / "admin.json").exists() and self._runtime() != "process":
            self.cli("down", check=False)
        self.kill_everything()

    def _runtime(self) -> str:
        """The spec file's runtime: `process` when it names none or there is no file; `unknown` when it cannot be
        read or is over portero's 1,000,000-byte limit (then the teardown goes the graceful way)."""
        try:
            if self.spec_file.stat().st_size > 1_000_000:  # a test of that limit wrote 50 MB: 33 s to parse
                return "unknown"
            spec = yaml.safe_load(self.spec_file.read_text())
        except FileNotFoundError:
            return "process"
        except (OSError, ValueError, yaml.YAMLError):  # ValueError: an int past Python's 4300 digits
            return "unknown"
        return str(spec.get("runtime", "process")) if isinstance(spec, dict) else "unknown"

    def kill_everything(self) -> None:
        """SIGKILL portero and every replica shim of this state directory, with its tree (the process runtime's
        teardown, and what a failed test left behind)."""
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.pid(), signal.SIGKILL)
        for proc in psutil.process_iter():
            try:
                command = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "portero.runtimes.shim" in command and str(self.state) in command:
                tree: list[psutil.Process] = []
                with contextlib.suppress(psutil.Error):
                    tree = proc.children(recursive=True)  # those that left the group too (the shim adopts them)
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                for descendant in tree:
                    with contextlib.suppress(psutil.Error):
                        descendant.kill()
            elif "portero.dataplane." in command and str(self.state.resolve()) in command:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGKILL)  # the router's parent and workers (their own session)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
