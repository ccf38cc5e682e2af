"""HTTPS with certificates portero obtains over ACME, against a real Pebble (tests/pebble_server.py) on loopback:
two hosts, each served by SNI and verified by curl against Pebble's root; redirects to HTTPS and HSTS; renewal of
short-lived certificates under 50 keep-alive HTTPS clients; a CA that is gone during a renewal; two porteros on
one Redis. No client turns verification off."""

from __future__ import annotations

import re
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portero.runtimes.ports import free_port
from tests.conftest import require_tool
from tests.integration.portero_cli import Portero
from tests.integration.router.conftest import Process, backend_process_argv
from tests.pebble_server import PebbleServer

pytestmark = pytest.mark.integration
HOSTS = ("a.portero.test", "b.portero.test")


@pytest.fixture
def backend() -> Iterator[Process]:
    started = Process(backend_process_argv("a"))
    yield started
    started.stop()


def make_pebble(portero: Portero, tmp_path: Path, validity_s: int | None = None) -> PebbleServer:
    require_tool("pebble", "Let's Encrypt's ACME test server: certificates obtained by portero are tested against it")
    require_tool("pebble-challtestsrv", "Pebble's DNS (every test host resolves to 127.0.0.1)")
    pebble = PebbleServer(tmp_path / "pebble", portero.router_port, validity_s=validity_s)
    pebble.start()
    return pebble


def write(portero: Portero, backend: Process, pebble: PebbleServer, tls_port: int, **acme: Any) -> None:
    routes = [
        {"host": HOSTS[0], "service": "web", "redirect_https": True, "hsts": {"max_age_s": 600}},
        {"host": HOSTS[1], "service": "web"},
    ]
    tls = {
        "port": tls_port,
        "acme": {
            "directory_url": pebble.directory_url,
            "ca_file": pebble.https_ca_file,
            "email": "ops@portero.test",
            "retry_initial_s": 1,
            "retry_max_s": 2,
            **acme,
        },
    }
    services = {"web": {"endpoints": [{"address": backend.address, "weight": 1}]}}
    portero.write_spec(services, router={"workers": 2, "routes": routes, "tls": tls})


def certificates(portero: Portero) -> dict[str, dict[str, Any]]:
    return {c["host"]: c for c in portero.get("/router/tls")["certificates"]}


def all_valid(portero: Portero, hosts: tuple[str, ...] = HOSTS) -> dict[str, dict[str, Any]] | None:
    found = certificates(portero)
    return found if all(found.get(h, {}).get("state") == "valid" for h in hosts) else None


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


def served_serial(port: int, host: str, context: ssl.SSLContext) -> str:
    import socket

    from cryptography import x509

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


@pytest.mark.timeout(180)
def test_certificates_from_pebble_for_two_hosts_served_by_sni_redirects_and_hsts(portero, backend, tmp_path):
    pebble = make_pebble(portero, tmp_path)
    tls_port = free_port(avoid={portero.router_port, portero.admin_port})
    try:
        write(portero, backend, pebble, tls_port)
        portero.cli("up", "--detach")
        found = portero.wait("both certificates from Pebble", lambda: all_valid(portero), timeout_s=60)
        root = str(pebble.root_file)
        for host in HOSTS:
            cert = found[host]
            assert "Pebble" in cert["issuer"], cert
            # curl checks the chain against Pebble's root and the name against the host it asked for (SNI)
            result = curl("--cacert", root, "--resolve", f"{host}:{tls_port}:127.0.0.1", "-D", "-",
                          f"https://{host}:{tls_port}/hello")  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("HTTP/1.1 200"), result.stdout
            assert served_serial(tls_port, host, pebble.client_context()) == cert["serial"]
            head = result.stdout.lower()
            if host == HOSTS[0]:
                assert "strict-transport-security: max-age=600" in head
            else:
                assert "strict-transport-security" not in head
        # a name the certificate of the other host does not carry is refused by curl's check, not served wrongly
        wrong = curl("--cacert", root, "--resolve", f"c.portero.test:{tls_port}:127.0.0.1",
                     f"https://c.portero.test:{tls_port}/")  # fmt: skip
        assert wrong.returncode != 0
        # plain HTTP: the redirecting route answers 308 to the same URL over HTTPS; the other is served as it was
        redirect = curl("-D", "-", "-o", "/dev/null", "-H", f"Host: {HOSTS[0]}",
                        f"http://127.0.0.1:{portero.router_port}/path?q=1")  # fmt: skip
        assert redirect.stdout.startswith("HTTP/1.1 308"), redirect.stdout
        assert f"location: https://{HOSTS[0]}:{tls_port}/path?q=1" in redirect.stdout.lower()
        plain = curl(
            "-D", "-", "-o", "/dev/null", "-H", f"Host: {HOSTS[1]}", f"http://127.0.0.1:{portero.router_port}/"
        )
        assert plain.stdout.startswith("HTTP/1.1 200"), plain.stdout
        # keys are stored owner-only; neither the API nor the logs show them
        tls_dir = portero.state / "tls"
        assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
        stored = [p for p in tls_dir.rglob("*") if p.is_file()]
        assert len(stored) >= 5  # the account key, two certificates, two live files
        for path in stored:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        shown = portero.http.get(portero.url + "/router/tls").text
        logs = "".join(p.read_text(errors="replace") for p in portero.state.rglob("*.log"))
        for text in (shown, logs):
            assert "PRIVATE KEY" not in text
            assert '"d":' not in text  # a JWK's private part

        def metrics_show_both() -> str | None:
            text = portero.http.get(f"http://127.0.0.1:{portero.admin_port}/metrics").text
            handshakes = re.search(r'portero_tls_handshakes_total{version="TLSv1\.[23]"} [1-9]', text)
            return text if handshakes and all(f'host="{h}",source="acme"}} 1.' in text for h in HOSTS) else None

        metrics = portero.wait("expiry and handshakes in /metrics", metrics_show_both, timeout_s=20, step_s=0.5)
        for host in HOSTS:
            line = re.search(
                rf'portero_tls_certificate_expiry_timestamp_seconds{{host="{re.escape(host)}",source="acme"}} (\S+)',
                metrics,
            )
            assert line is not None, metrics[-2000:]
            assert abs(float(line.group(1)) - found[host]["not_after"]) < 1
        events = [e["kind"] for e in portero.events()]
        assert events.count("tls.obtained") == 2, events
        status = portero.cli("router", "tls").stdout
        assert all(h in status for h in HOSTS), status
        assert "valid until" in status, status
    finally:
        pebble.stop()
