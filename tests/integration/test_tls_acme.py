"""HTTPS with certificates portero obtains over ACME, against a real Pebble (tests/pebble_server.py) on loopback:
two hosts, each served by SNI and verified by curl against Pebble's root; redirects to HTTPS and HSTS; renewal of
short-lived certificates under 50 keep-alive HTTPS clients; a CA that is gone during a renewal; two porteros on
one Redis. No client turns verification off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portero.loadgen import run_load
from portero.runtimes.ports import free_port
from tests.chromium import CHROMIUM_ARGS
from tests.conftest import require_tool
from tests.integration.portero_cli import Portero
from tests.integration.router.conftest import Process, backend_process_argv
from tests.pebble_server import PebbleServer

pytestmark = pytest.mark.integration
HOSTS = ("a.portero.test", "b.portero.test")
RENEWAL_ALERT = "tls-renewal-failed"


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


@pytest.fixture
def pebbles(tmp_path: Path) -> Iterator[Callable[..., PebbleServer]]:
    """Starts a Pebble checking HTTP-01 at a portero's router; every one started is stopped after the test."""
    started: list[PebbleServer] = []

    def start(portero: Portero, validity_s: int | None = None) -> PebbleServer:
        started.append(make_pebble(portero, tmp_path, validity_s))
        return started[-1]

    yield start
    for pebble in started:
        pebble.stop()


def https_port(portero: Portero) -> int:
    return free_port(avoid={portero.router_port, portero.admin_port})


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
def test_certificates_from_pebble_for_two_hosts_served_by_sni_redirects_and_hsts(portero, backend, pebbles):
    pebble = pebbles(portero)
    tls_port = https_port(portero)
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
    plain = curl("-D", "-", "-o", "/dev/null", "-H", f"Host: {HOSTS[1]}", f"http://127.0.0.1:{portero.router_port}/")
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


def serving(portero: Portero, host: str, tls_port: int, pebble: PebbleServer) -> str:
    """The serial a new connection to `host` is served, checked against Pebble's root (curl's check too)."""
    result = curl("--cacert", str(pebble.root_file), "--resolve", f"{host}:{tls_port}:127.0.0.1", "-o", "/dev/null",
                  "-w", "%{http_code}", f"https://{host}:{tls_port}/")  # fmt: skip
    assert result.stdout == "200", (result.stdout, result.stderr)
    return served_serial(tls_port, host, pebble.client_context())


@pytest.mark.timeout(240)
async def test_short_lived_certificates_renewed_under_50_https_clients_fail_nothing(portero, backend, pebbles):
    pebble = pebbles(portero, validity_s=30)  # renewed 20 s into its life, again and again
    tls_port = https_port(portero)
    write(portero, backend, pebble, tls_port)
    await asyncio.to_thread(portero.cli, "up", "--detach")
    found = await asyncio.to_thread(portero.wait, "both certificates from Pebble", lambda: all_valid(portero), 60)
    first = found[HOSTS[0]]["serial"]
    assert await asyncio.to_thread(serving, portero, HOSTS[0], tls_port, pebble) == first
    stop = asyncio.Event()

    def renewed_once() -> bool:
        return any(e["kind"] == "tls.renewed" and e["subject"] == HOSTS[0] for e in portero.events())

    async def until_renewed() -> None:
        """The load goes on 3 s past the first renewal, and 30 s at most (as long as it always took)."""
        with contextlib.suppress(AssertionError):  # none within the 30 s: the load ends, the assertions tell
            await asyncio.to_thread(portero.wait, "a renewal", renewed_once, 30, 0.25)
            await asyncio.sleep(3)
        stop.set()

    watcher = asyncio.ensure_future(until_renewed())
    report = await run_load(
        f"https://{HOSTS[0]}:{tls_port}/",
        concurrency=50,
        duration_s=30,
        stop=stop,
        ssl_context=pebble.client_context(),
        connect_to=("127.0.0.1", tls_port),
    )
    watcher.cancel()
    renewed = [e for e in portero.events() if e["kind"] == "tls.renewed" and e["subject"] == HOSTS[0]]
    now = certificates(portero)[HOSTS[0]]
    print(
        f"renewal under load: {report.sent} requests over {report.connections} connections, {report.failed} "
        f"failed; {len(renewed)} renewal(s) of {HOSTS[0]}: {first} -> {now['serial']}"
    )
    assert renewed, "no renewal during the load"
    assert report.sent > 1000
    assert report.failed == 0, report.errors
    assert now["serial"] != first
    # a new connection gets the certificate the API says is served (the newest), checked against the root
    latest = await asyncio.to_thread(serving, portero, HOSTS[0], tls_port, pebble)
    assert latest in {now["serial"], certificates(portero)[HOSTS[0]]["serial"]}
    assert latest != first


@pytest.mark.timeout(240)
def test_a_ca_that_is_gone_during_a_renewal_leaves_the_old_certificate_serving_and_fires_the_alert(
    portero, backend, pebbles
):
    pebble = pebbles(portero, validity_s=45)
    tls_port = https_port(portero)
    write(portero, backend, pebble, tls_port, hosts=[HOSTS[0]])
    portero.cli("up", "--detach")
    portero.wait("a certificate from Pebble", lambda: all_valid(portero, HOSTS[:1]), timeout_s=60)
    # Pebble goes the moment the renewal begins (or, if that one was quicker than us, before the next)
    portero.wait("the renewal to begin", lambda: certificates(portero)[HOSTS[0]]["state"] == "renewing",
                 timeout_s=60, step_s=0.02)  # fmt: skip
    pebble.stop_ca()
    failing = portero.wait("the renewal to fail", lambda: (c := certificates(portero)[HOSTS[0]])["failures"]
                           and c, timeout_s=60)  # fmt: skip
    assert failing["state"] == "failing"
    assert failing["error"], failing  # why, for a person (how the CA went missing depends on the moment)
    # the certificate it had keeps serving new connections
    assert serving(portero, HOSTS[0], tls_port, pebble) == failing["serial"]
    firing = portero.wait(
        "the tls-renewal-failed alert",
        lambda: [e for e in portero.events() if (e["kind"], e["subject"]) == ("alert.firing", RENEWAL_ALERT)],
        timeout_s=20,
    )
    assert HOSTS[0] in firing[0]["message"]
    failed = [e for e in portero.events() if e["kind"] == "tls.failed"]
    assert "keeps serving" in failed[0]["message"], failed[0]

    def metrics() -> str | None:
        text = portero.http.get(f"http://127.0.0.1:{portero.admin_port}/metrics").text
        line = f'portero_tls_certificate_failures{{host="{HOSTS[0]}",source="acme"}} '
        return text if line in text and f"{line}0.0" not in text else None

    text = portero.wait("the failures in /metrics", metrics, timeout_s=20, step_s=0.5)
    expiry = re.search(
        rf'portero_tls_certificate_expiry_timestamp_seconds{{host="{re.escape(HOSTS[0])}",source="acme"}} (\S+)',
        text,
    )
    assert expiry is not None
    assert abs(float(expiry.group(1)) - failing["not_after"]) < 1
    assert 'portero_alerts{alertname="tls-renewal-failed",alertstate="firing"}' in text
    print(f"CA gone: {failing['error']}; serial {failing['serial']} serves until {failing['not_after']}")


@pytest.mark.timeout(300)
def test_two_porteros_on_one_redis_make_one_order_per_host_and_both_serve_it(tmp_path, backend, redis_server, pebbles):
    members: list[Portero] = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        members.append(Portero(tmp_path / name, env={"REDIS_URL": redis_server.url}))
    a, b = members
    pebble = pebbles(a)  # the CA checks HTTP-01 at A's router; B serves the challenges all the same
    taken = {a.router_port, a.admin_port, b.router_port, b.admin_port}
    ports = {"a": free_port(avoid=taken)}
    ports["b"] = free_port(avoid=taken | {ports["a"]})
    try:
        for member, port in zip(members, ports.values(), strict=True):
            write(member, backend, pebble, port)
        a.cli("up", "--detach")
        b.cli("up", "--detach")
        for member in members:
            member.wait("both certificates", lambda m=member: all_valid(m), timeout_s=90)
        for host in HOSTS:
            served = {serving(m, host, p, pebble) for m, p in zip(members, ports.values(), strict=True)}
            assert len(served) == 1, served
            assert served == {certificates(a)[host]["serial"]}
        issued = pebble.log().count("Issued certificate serial")
        assert issued == len(HOSTS), pebble.log()
        obtained = [e for e in a.events() if e["kind"] == "tls.obtained"]
        assert sorted(e["subject"] for e in obtained) == sorted(HOSTS)
        assert not (b.state / "tls" / "certs").exists()  # with Redis the vault is Redis, not the state directory
    finally:
        for member in members:
            member.stop()


@pytest.mark.timeout(180)
def test_the_admin_api_over_https_with_the_routers_certificate_and_the_cli_checking_it(portero, backend, pebbles):
    pebble = pebbles(portero)
    tls_port = https_port(portero)
    write(portero, backend, pebble, tls_port)
    spec = json.loads(portero.spec_file.read_text())
    spec["admin"]["tls"] = {"router_host": HOSTS[0], "ca_file": str(pebble.root_file)}
    portero.spec_file.write_text(json.dumps(spec))
    portero.cli("up", "--detach")  # the CLI trusts the stand-in (admin.json) until the real one is there
    info = json.loads((portero.state / "admin.json").read_text())
    assert info["url"] == f"https://127.0.0.1:{portero.admin_port}"

    def api_serves_pebbles() -> bool:
        result = curl("--cacert", str(pebble.root_file), "--resolve", f"{HOSTS[0]}:{portero.admin_port}:127.0.0.1",
                      "-o", "/dev/null", "-w", "%{http_code}",
                      f"https://{HOSTS[0]}:{portero.admin_port}/scalability/health")  # fmt: skip
        return result.stdout == "200"

    portero.wait("the admin API on Pebble's certificate", api_serves_pebbles, timeout_s=60, step_s=0.25)
    shown = json.loads(portero.cli("router", "tls", "--json").stdout)
    assert {c["host"] for c in shown["certificates"]} == set(HOSTS)
    # plain HTTP to the API gets nothing it could send a token over
    plain = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{portero.admin_port}/scalability/health")
    assert plain.stdout != "200"
    # a client that trusts neither Pebble's root nor the stand-in refuses to talk to it
    untrusted = curl("-o", "/dev/null", f"https://127.0.0.1:{portero.admin_port}/scalability/health")
    assert untrusted.returncode == 60, untrusted  # curl: the peer's certificate cannot be authenticated


@pytest.mark.timeout(180)
def test_the_dashboard_shows_each_certificate_at_phone_width_and_chromium_trusts_them(
    portero, backend, browser, pebbles, tmp_path
):
    pebble = pebbles(portero)
    tls_port = https_port(portero)
    write(portero, backend, pebble, tls_port)
    portero.cli("up", "--detach")
    found = portero.wait("both certificates from Pebble", lambda: all_valid(portero), timeout_s=60)
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{portero.admin_port}/scalability/dashboard")
    page.wait_for_selector("#login[open]", timeout=15_000)
    page.fill("#token", portero.token)
    page.click("#login-submit")
    shown = "() => document.querySelectorAll('#certificates tbody tr').length === 2"
    portero.wait("the certificates on the dashboard", lambda: page.evaluate(shown), timeout_s=15, step_s=0.2)
    assert page.locator("#certificates-panel").is_visible()
    rows = page.locator("#certificates tbody tr").all_inner_texts()
    for host in HOSTS:
        row = next(r for r in rows if host in r)
        assert "acme" in row
        assert "valid" in row
        days = round((found[host]["not_after"] - time.time()) / 86_400)
        assert f"({days} d)" in row, row
    # nothing wider than the phone's screen
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    context.close()

    # Chromium, trusting Pebble's root (an NSS database of its own), follows the redirect to HTTPS and accepts the
    # certificate; nothing turns its checks off
    home = tmp_path / "chromium-home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    certutil = require_tool("certutil", "Chromium's certificate store (libnss3-tools)")
    subprocess.run([certutil, "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    trust = [certutil, "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "pebble", "-i", str(pebble.root_file)]
    subprocess.run(trust, check=True)
    trusting = browser.browser_type.launch(
        executable_path=require_tool("chromium", "the HTTPS test in a browser"),
        args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP *.portero.test 127.0.0.1"],
        env={**os.environ, "HOME": str(home)},
    )
    try:
        tab = trusting.new_page()
        response = tab.goto(f"http://{HOSTS[0]}:{portero.router_port}/from-http")
        assert response is not None
        assert tab.url == f"https://{HOSTS[0]}:{tls_port}/from-http"
        assert response.status == 200
        details = response.security_details()
        assert details is not None
        assert "Pebble" in str(details.get("issuer")), details
        assert details.get("subjectName") == HOSTS[0]
        assert response.headers.get("strict-transport-security") == "max-age=600"
    finally:
        trusting.close()
