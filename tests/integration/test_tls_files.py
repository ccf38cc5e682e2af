"""Certificates given as files to a running portero: served by SNI, checked against the tests' root; replaced on
disk (as certbot renews), the new one reaches new connections while an open keep-alive connection goes on with
the one it handshook with; a file that goes bad leaves the certificate before it serving."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from portero.runtimes.ports import free_port
from tests.integration.portero_cli import Portero
from tests.integration.router.conftest import Process, backend_process_argv
from tests.tls_ca import TestCA

pytestmark = pytest.mark.integration
HOST = "portal.portero.test"


@pytest.fixture
def backend() -> Iterator[Process]:
    started = Process(backend_process_argv("a"))
    yield started
    started.stop()


class Connection:
    """One keep-alive HTTPS connection, checked against the root, for HOST."""

    def __init__(self, port: int, ca: TestCA) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = ca.client_context().wrap_socket(raw, server_hostname=HOST)
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        self.serial = format(x509.load_der_x509_certificate(der).serial_number, "x")

    def get(self) -> bytes:
        self.sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            assert chunk, "the connection was closed"
            head += chunk
        return head.split(b"\r\n", 1)[0]

    def close(self) -> None:
        self.sock.close()


def replace(target: Path, source: Path) -> None:
    """`source`'s content into `target` at once (a rename), as certbot swaps its `live/` links."""
    tmp = target.with_suffix(".new")
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)


@pytest.mark.timeout(120)
def test_a_certificate_replaced_on_disk_reaches_new_connections_and_leaves_open_ones_serving(
    portero: Portero, backend: Process, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "ca")
    chain, key = ca.issue([HOST], name="first")
    cert_file, key_file = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    replace(cert_file, chain)
    replace(key_file, key)
    tls_port = free_port(avoid={portero.router_port, portero.admin_port})
    tls = {"port": tls_port, "certificates": [{"cert_file": str(cert_file), "key_file": str(key_file)}]}
    services = {"web": {"endpoints": [{"address": backend.address, "weight": 1}]}}
    portero.write_spec(services, router={"workers": 2, "routes": [{"host": HOST, "service": "web"}], "tls": tls})
    portero.cli("up", "--detach")
    kept = portero.wait("HTTPS with the given certificate", lambda: Connection(tls_port, ca), timeout_s=20)
    assert kept.get() == b"HTTP/1.1 200 Whatever"
    first = kept.serial
    shown = portero.get("/router/tls")["certificates"]
    assert [(c["host"], c["source"], c["state"], c["serial"]) for c in shown] == [(HOST, "file", "valid", first)]

    # certbot renews: new files in place; a new connection gets the new certificate within seconds
    chain2, key2 = ca.issue([HOST], name="second")
    replace(key_file, key2)
    replace(cert_file, chain2)

    def renewed() -> str | None:
        fresh = Connection(tls_port, ca)
        fresh.close()
        return fresh.serial if fresh.serial != first else None

    second = portero.wait("the new certificate on new connections", renewed, timeout_s=15, step_s=0.2)
    assert portero.get("/router/tls")["certificates"][0]["serial"] == second
    # the connection opened before goes on, with the certificate it handshook with
    assert kept.get() == b"HTTP/1.1 200 Whatever"
    assert kept.serial == first

    # a broken file: the certificate before keeps serving, and the API says why
    cert_file.write_text("not a certificate")
    failing = portero.wait(
        "the broken file reported",
        lambda: (c := portero.get("/router/tls")["certificates"][0])["state"] == "failing" and c,
        timeout_s=15,
    )
    assert "fullchain.pem" in failing["error"]
    again = Connection(tls_port, ca)
    assert again.serial == second
    assert again.get() == b"HTTP/1.1 200 Whatever"
    for connection in (kept, again):
        connection.close()
    with pytest.raises(ssl.SSLCertVerificationError):  # and nothing but the root's certificates is accepted
        Connection(tls_port, TestCA(tmp_path / "other-ca"))


@pytest.mark.timeout(120)
def test_the_admin_api_with_its_own_certificate_and_the_cli_checking_it(
    portero: Portero, backend: Process, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "ca")
    chain, key = ca.issue(["127.0.0.1"], name="admin")
    services = {"web": {"endpoints": [{"address": backend.address, "weight": 1}]}}
    admin_tls = {"cert_file": str(chain), "key_file": str(key), "ca_file": str(ca.root_file)}
    portero.write_spec(services, admin={"port": portero.admin_port, "tls": admin_tls})
    portero.cli("up", "--detach")  # waits for the API: over HTTPS, checked against ca_file
    status = portero.cli("router", "status").stdout
    assert "router pid" in status
    with (
        socket.create_connection(("127.0.0.1", portero.admin_port), timeout=5) as raw,
        ca.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(b"GET /scalability/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
    stranger = TestCA(tmp_path / "other").client_context()  # a client that does not trust the CA refuses it
    with (
        socket.create_connection(("127.0.0.1", portero.admin_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        stranger.wrap_socket(raw, server_hostname="127.0.0.1")
