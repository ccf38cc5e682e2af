"""`make bench`, HTTPS: portero's router against HAProxy, both terminating TLS with the same certificate (ECDSA P-256)
in front of the same nginx backend, with the pinning of bench/targets.py (the proxy on core 0; wrk and the backend
on core 1), in one run.

Two figures per proxy, each the median of `--rounds` interleaved runs of `wrk -t1 -c50`:
- keep-alive requests/s over TLS (50 connections, each handshaking once);
- new TLS connections/s: every request on a new connection (`Connection: close`), so every request is a full
  handshake (session tickets off on both proxies, and wrk keeps no sessions).
TLS 1.3 (what wrk's OpenSSL and both proxies agree on), both proxies with one thread of work each: HAProxy
`nbthread 1`, portero `router.workers: 1`.

wrk does not check certificates (it is a load generator); the chain is checked where it matters, in `make test`
(tests/integration/test_tls_acme.py, against Pebble's root). Writes bench/results/tls.md.

    .venv/bin/python bench/tls.py [--duration 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

import targets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tls.md"
PORTS = {"haproxy": 18101, "portero": 18100}
NAME = "bench.portero.test"
CONNECTIONS = 50
LAYOUT = targets.LAYOUTS[1]  # one worker per proxy: the proxy on core 0; wrk and the backend on core 1

HAPROXY_TLS_CONF = """
global
  nbthread 1
  maxconn {max_conns}
  ulimit-n {nofile}
  no strict-limits
  log stderr format short local0 err
  tune.ssl.cachesize 0
  ssl-default-bind-ciphers {ciphers}
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets

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
  bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  default_backend backend

backend backend
  http-reuse always
  option httpchk GET /health
  server s1 127.0.0.1:{backend} check inter 2s rise 2 fall 3 maxconn {max_conns} pool-max-conn {pool}
"""

PORTERO_TLS_SPEC = """
admin: {{port: {admin}}}
router:
  port: {http_port}
  pool_size: {pool}
  workers: 1
  tls: {{port: {port}, session_tickets: false, certificates: [{{cert_file: "{pem}"}}]}}
services:
  bench:
    endpoints: [{{address: "127.0.0.1:{backend}"}}]
    balance: {{slow_start_s: 0}}
"""


def certificate(directory: Path) -> Path:
    """One self-signed ECDSA P-256 certificate and its key in one PEM file, served by both proxies."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = directory / "bench.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key_pem)
    pem.chmod(0o600)
    return pem


def check(port: int, pem: Path, timeout_s: float = 20.0) -> None:
    """One HTTPS request, the certificate checked (trusted as its own root) for NAME: the setup serves it."""
    context = ssl.create_default_context(cafile=str(pem))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=NAME) as sock,
            ):
                sock.sendall(f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200") and data.endswith(targets.BODY.encode()):
                return
            error = f"answered {data[:200]!r}"
        except (OSError, ssl.SSLError) as exc:
            error = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"https://127.0.0.1:{port}/ for {NAME}: {error}")
        time.sleep(0.2)


def wrk(port: int, seconds: float, close: bool) -> tuple[float, int]:
    """(requests/s, errors) of one wrk run against https://127.0.0.1:port/."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "5s"]
    if close:
        command += ["-H", "Connection: close"]
    command.append(f"https://127.0.0.1:{port}/")
    done = subprocess.run(targets.pinned(LAYOUT.load_cores, command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    rps = float(done.stdout.split("Requests/sec:")[1].split()[0])
    errors = 0
    if "Socket errors" in done.stdout:
        line = done.stdout.split("Socket errors:")[1].splitlines()[0]
        errors = sum(int(part.split()[-1]) for part in line.split(","))
    if "Non-2xx" in done.stdout:
        errors += int(done.stdout.split("Non-2xx or 3xx responses:")[1].split()[0])
    return rps, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    targets.check_tools()
    bench = targets.Bench(())
    pem = certificate(bench.dir)
    values = {
        "dir": bench.dir,
        "backend": targets.BACKEND_PORT,
        "pool": targets.POOL_SIZE,
        "max_conns": targets.MAX_CONNS,
        "nofile": targets.raise_nofile(targets.MAX_CONNS * 2 + 1000),
        "admin": targets.PORTERO_ADMIN_PORT,
        "pem": pem,
        "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
    }
    conf = bench._write("haproxy-tls.cfg", HAPROXY_TLS_CONF, {**values, "port": PORTS["haproxy"]})
    bench.servers["haproxy"] = targets.Server(
        "haproxy", PORTS["haproxy"], ["haproxy", "-db", "-f", str(conf)], LAYOUT.proxy_cores, bench.dir / "h.log"
    )
    spec = bench._write(
        "portero.yaml", PORTERO_TLS_SPEC, {**values, "port": PORTS["portero"], "http_port": targets.PORTS["portero"]}
    )
    command = [str(targets.PORTERO), "--state-dir", str(bench.dir / "state"), "up", "-f", str(spec), "--no-ui"]
    bench.servers["portero"] = targets.Server(
        "portero", PORTS["portero"], command, LAYOUT.proxy_cores, bench.dir / "portero.log"
    )
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, str], list[float]] = {}
    errors: dict[str, int] = {}
    try:
        for server in bench.servers.values():
            server.start()
        targets.get_ok(targets.BACKEND_PORT)
        for port in PORTS.values():
            check(port, pem)
        for _ in range(args.rounds):
            for name in ("haproxy", "portero"):
                for kind, close in (("keep-alive", False), ("handshakes", True)):
                    if args.warmup:
                        wrk(PORTS[name], args.warmup, close)
                    rps, failed = wrk(PORTS[name], args.duration, close)
                    results.setdefault((name, kind), []).append(rps)
                    errors[name] = errors.get(name, 0) + failed
                    print(f"{name:8} {kind:10} {rps:10.0f}/s  errors {failed}", flush=True)
    finally:
        bench.close()
    median = {key: statistics.median(values) for key, values in results.items()}
    lines = [
        f"# HTTPS: portero vs HAProxy ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`wrk -t1 -c{CONNECTIONS} -d{args.duration:g}s` over TLS 1.3, one ECDSA P-256 certificate for both, the "
        f"proxy on core {LAYOUT.proxy_cores}, wrk and nginx on core {LAYOUT.load_cores}; median of {args.rounds} "
        "interleaved rounds.",
        "",
        "| | HAProxy | portero | portero / HAProxy | needed |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, label, needed in (
        ("keep-alive", "keep-alive requests/s", 0.8),
        ("handshakes", "new TLS connections/s (full handshakes)", 0.7),
    ):
        h, p = median[("haproxy", kind)], median[("portero", kind)]
        mark = "met" if p >= needed * h else "NOT met"
        lines.append(f"| {label} | {h:,.0f} | {p:,.0f} | {p / h:.2f} | ≥ {needed} ({mark}) |")
    lines += [
        "",
        f"errors (socket errors, non-2xx): HAProxy {errors['haproxy']}, portero {errors['portero']}",
        "",
        f"load average (1 min) before and after: {load_before:.2f}, {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
        "(above ~1 other work shared the machine and the figures are not to be trusted)",
        "",
        "per round (requests/s): "
        + "; ".join(f"{n} {k}: {', '.join(f'{v:,.0f}' for v in vs)}" for (n, k), vs in sorted(results.items())),
        "",
    ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    sys.exit(0)


if __name__ == "__main__":
    main()
