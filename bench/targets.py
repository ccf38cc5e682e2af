"""The servers a bench run talks to: one nginx backend and the proxies in front of it, configured alike.

Every proxy has one worker (one thread), keeps a keep-alive pool of upstream connections to the same backend
(sized for the 1,000-connection runs, so no proxy churns connections), adds the same request headers
(X-Forwarded-For/-Proto/-Host, X-Request-Id) and checks the backend's health every 2 s (nginx has no active
checks outside its commercial version, so it only has its passive `max_fails`). Pinning, on this 2-core machine:
the proxy under test on core 0, alone; wrk and the backend share core 1. "direct" (wrk straight to the backend)
uses the same pinning, so it is the ceiling core 1 allows, not a proxy result.
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

PROXY_CORE = "0"
LOAD_CORE = "1"  # wrk and the backend
BACKEND_PORT = 18081
PORTS = {"direct": BACKEND_PORT, "portero": 18000, "haproxy": 18001, "nginx": 18002}
PORTERO_ADMIN_PORT = 19900
POOL_SIZE = 1024  # idle upstream connections each proxy may keep (portero router.pool_size, nginx keepalive)
NGINX_CONNS = 12_000  # nginx counts upstream connections in worker_connections too
MAX_CONNS = 10_500  # client connections each server accepts: the idle test holds 10,000 (hard NOFILE: 20,000)
BODY = "hello world\n"  # 12 bytes
# Nice level of the bench's processes (root only; BENCH_NICE=-10, say, on a machine shared with other work).
# Off by default: it would take CPU from whatever else runs there.
NICE = int(os.environ.get("BENCH_NICE", "0")) if os.geteuid() == 0 else 0

BACKEND_CONF = """
worker_processes 1;
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
worker_processes 1;
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
  nbthread 1
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
router: {{port: {port}, pool_size: {pool}}}
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

    def worker_pid(self) -> int:
        """The process that serves connections: nginx's single worker, else the process itself."""
        main = psutil.Process(self.pid())
        children = main.children()
        return children[0].pid if self.name in ("backend", "nginx") and children else main.pid

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.worker_pid()).memory_info().rss)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # nginx stops at once on SIGTERM (SIGQUIT would wait for keep-alive clients); haproxy and portero on SIGTERM.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Bench:
    """The backend and every proxy, each from its own config in a temporary directory."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="portero-bench-"))
        self.names = names
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
        }
        self.servers: dict[str, Server] = {}
        self.servers["backend"] = self._nginx("backend", BACKEND_PORT, BACKEND_CONF, LOAD_CORE, values)
        for name in names:
            if name == "haproxy":
                conf = self._write("haproxy.cfg", HAPROXY_CONF, {**values, "port": PORTS[name]})
                self.servers[name] = Server(
                    name, PORTS[name], ["haproxy", "-db", "-f", str(conf)], PROXY_CORE, self.dir / "haproxy.log"
                )
            elif name == "nginx":
                self.servers[name] = self._nginx(name, PORTS[name], NGINX_PROXY_CONF, PROXY_CORE, values)
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
                self.servers[name] = Server(name, PORTS[name], command, PROXY_CORE, self.dir / "portero.log")

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
