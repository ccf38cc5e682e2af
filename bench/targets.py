"""The servers a bench run talks to: one nginx backend and the proxies in front of it, configured alike.

Every proxy has the same number of workers (HAProxy threads, nginx worker processes, portero router workers),
keeps a keep-alive pool of upstream connections to the same backend (sized for the 1,000-connection runs, so no
proxy churns connections), adds the same request headers (X-Forwarded-For/-Proto/-Host, X-Request-Id) and checks
the backend's health every 2 s (nginx has no active checks outside its commercial version, so it only has its
passive `max_fails`). Two layouts on this 2-core machine (`LAYOUTS`):

- 1 worker: the proxy under test on core 0, alone; wrk (one thread) and the backend (one worker) share core 1.
- 2 workers: every process may run on both cores: the proxy, wrk (two threads) and the backend (two workers).

"direct" (wrk straight to the backend) uses the same pinning, so it is the ceiling of the load's cores, not a
proxy result.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PORTERO = ROOT / ".venv" / "bin" / "portero"

BACKEND_PORT = 18081
PORTS = {"direct": BACKEND_PORT, "portero": 18000, "haproxy": 18001, "nginx": 18002}
PORTERO_ADMIN_PORT = 19900
POOL_SIZE = 1024  # idle upstream connections each proxy may keep (portero router.pool_size, nginx keepalive)
NGINX_CONNS = 12_000  # nginx counts upstream connections in worker_connections too
STOP_WAIT_S = 30  # for `portero up` to stop after SIGTERM (its router workers' grace is 10 s)
MAX_CONNS = 10_500  # client connections each server accepts: the idle test holds 10,000 (hard NOFILE: 20,000)
BODY = "hello world\n"  # 12 bytes
# Nice level of the bench's processes (root only; BENCH_NICE=-10, say, on a machine shared with other work).
# Off by default: it would take CPU from whatever else runs there.
NICE = int(os.environ.get("BENCH_NICE", "0")) if os.geteuid() == 0 else 0


@dataclass(frozen=True)
class Layout:
    """How many workers each proxy runs, and the cores (taskset lists) of the proxy and of the load."""

    workers: int
    proxy_cores: str
    load_cores: str  # wrk and the backend

    def describe(self) -> str:
        w = self.workers
        proxies = f"HAProxy `nbthread {w}`, nginx `worker_processes {w}`, portero `router.workers: {w}`"
        load = f"wrk ({w} thread{'s' if w > 1 else ''}) and the backend ({w} worker{'s' if w > 1 else ''})"
        if self.proxy_cores == self.load_cores:
            return f"{proxies}; the proxy, {load} all on cores {self.proxy_cores}"
        return f"{proxies}, on core {self.proxy_cores}; {load} on core {self.load_cores}"


LAYOUTS = {1: Layout(1, "0", "1"), 2: Layout(2, "0,1", "0,1")}

BACKEND_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend-error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {nginx_conns}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {dir}/backend-body;
  proxy_temp_path {dir}/backend-proxy;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type text/plain; return 200 "{body}"; }}
  }}
}}
"""

NGINX_PROXY_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/nginx-proxy.pid;
error_log {dir}/nginx-proxy-error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {nginx_conns}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_header_timeout 10s;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  upstream backend {{
    server 127.0.0.1:{backend} max_fails=3 fail_timeout=30s;
    keepalive {pool};
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;
      proxy_connect_timeout 2s;
      proxy_read_timeout 60s;
      proxy_buffering on;
    }}
  }}
}}
"""

HAPROXY_CONF = """
global
  nbthread {workers}
  maxconn {max_conns}
  ulimit-n {nofile}
  no strict-limits
  log stderr format short local0 err

defaults
  mode http
  log global
  option dontlognull
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
  maxconn {max_conns}

frontend bench
  bind 127.0.0.1:{port}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  default_backend backend

backend backend
  http-reuse always
  option httpchk GET /health
  server s1 127.0.0.1:{backend} check inter 2s rise 2 fall 3 maxconn {max_conns} pool-max-conn {pool}
"""

PORTERO_SPEC = """
admin: {{port: {admin}}}
router: {{port: {port}, pool_size: {pool}, workers: {workers}}}
services:
  bench:
    endpoints: [{{address: "127.0.0.1:{backend}"}}]
    balance: {{slow_start_s: 0}}
"""


def pinned(core: str, command: list[str]) -> list[str]:
    """`command` on `core`, at the bench's nice level."""
    niced = ["nice", "-n", str(NICE)] if NICE else []
    return [*niced, "taskset", "-c", core, *command]


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit (children inherit it) to `wanted`, or as far as the hard limit lets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


def get_ok(port: int, path: str = "/") -> bytes:
    """One request; the response must be 200 with the backend's body, or the setup is wrong."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(BODY.encode()):
        raise RuntimeError(f"127.0.0.1:{port}{path} answered {data[:200]!r}")
    return data


@dataclass
class Server:
    name: str
    port: int
    command: list[str]
    core: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            # A server left over from an earlier run would answer instead of this one, and be measured.
            raise RuntimeError(f"{self.name}: 127.0.0.1:{self.port} is already taken by another process")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                pinned(self.core, self.command),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.extra_env},
                start_new_session=True,
            )
        try:
            wait_port(self.port)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}; its log:\n{self.log.read_text()[-2000:]}") from exc

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def processes(self) -> list[psutil.Process]:
        """Every process of this server: for portero, the control plane, the router's parent and its workers."""
        main = psutil.Process(self.pid())
        return [main, *main.children(recursive=True)]

    def serving(self) -> list[psutil.Process]:
        """The processes that serve connections: nginx's workers, portero's router workers (not the spare)."""
        main = psutil.Process(self.pid())
        if self.name == "portero":
            return [p for p in main.children(recursive=True) if worker_kind(p) == "serving"]
        if self.name in ("backend", "nginx"):
            return main.children() or [main]
        return [main]

    def rss_bytes(self) -> int:
        return sum(int(p.memory_info().rss) for p in self.serving())

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        # portero's router outlives a control plane that is killed (by design), so its processes are noted first
        # and ended here if they are still there once the control plane has gone.
        tree = self.processes() if process.poll() is None else []
        self.process = None
        # nginx stops at once on SIGTERM (SIGQUIT would wait for keep-alive clients); haproxy and portero on SIGTERM.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        _, alive = psutil.wait_procs(tree, timeout=5)
        for leftover in alive:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        psutil.wait_procs(alive, timeout=5)


def worker_kind(process: psutil.Process) -> str:
    """ "serving" or "spare" for a router worker (by its command line), "" for any other process."""
    try:
        argv = process.cmdline()
    except psutil.Error:
        return ""
    if "portero.dataplane.worker" not in argv:
        return ""
    return "spare" if "--spare" in argv else "serving"


class Bench:
    """The backend and every proxy, each from its own config in a temporary directory."""

    def __init__(self, names: tuple[str, ...], layout: Layout = LAYOUTS[1]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="portero-bench-"))
        self.names = names
        self.layout = layout
        nofile = raise_nofile(MAX_CONNS * 2 + 1000)
        values = {
            "dir": self.dir,
            "backend": BACKEND_PORT,
            "pool": POOL_SIZE,
            "max_conns": MAX_CONNS,
            "nginx_conns": NGINX_CONNS,
            "nofile": nofile,
            "body": BODY.replace("\n", "\\n"),
            "admin": PORTERO_ADMIN_PORT,
            "workers": layout.workers,
        }
        self.servers: dict[str, Server] = {}
        self.servers["backend"] = self._nginx("backend", BACKEND_PORT, BACKEND_CONF, layout.load_cores, values)
        for name in names:
            if name == "haproxy":
                conf = self._write("haproxy.cfg", HAPROXY_CONF, {**values, "port": PORTS[name]})
                command = ["haproxy", "-db", "-f", str(conf)]
                self.servers[name] = Server(name, PORTS[name], command, layout.proxy_cores, self.dir / "haproxy.log")
            elif name == "nginx":
                self.servers[name] = self._nginx(name, PORTS[name], NGINX_PROXY_CONF, layout.proxy_cores, values)
            elif name == "portero":
                spec = self._write("portero.yaml", PORTERO_SPEC, {**values, "port": PORTS[name]})
                command = [
                    str(PORTERO),
                    "--state-dir",
                    str(self.dir / "portero-state"),
                    "up",
                    "-f",
                    str(spec),
                    "--no-ui",
                ]
                self.servers[name] = Server(name, PORTS[name], command, layout.proxy_cores, self.dir / "portero.log")

    def _write(self, filename: str, template: str, values: dict[str, object]) -> Path:
        path = self.dir / filename
        path.write_text(template.format(**values))
        return path

    def _nginx(self, name: str, port: int, template: str, core: str, values: dict[str, object]) -> Server:
        conf = self._write(f"{name}.conf", template, {**values, "port": port})
        command = ["nginx", "-p", str(self.dir), "-e", str(self.dir / f"{name}-error.log"), "-c", str(conf)]
        return Server(name, port, command, core, self.dir / f"{name}.log")

    def __enter__(self) -> Bench:
        try:
            for server in self.servers.values():
                server.start()
            for server in self.servers.values():
                get_ok(server.port)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for server in reversed(list(self.servers.values())):
            server.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "haproxy", "nginx", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)}; run bench/provision.sh (as root) first")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs 2 cores (proxy on core 0, wrk and the backend on core 1)")
