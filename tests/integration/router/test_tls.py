"""HTTPS in the router's engine: certificates picked by SNI and checked against a root by the client, TLS 1.2 and 1.3
only, redirects to HTTPS, HSTS, X-Forwarded-Proto, ACME challenges over HTTP, and a certificate swapped under an
open connection. Clients verify every chain (tests/tls_ca.py's root); nothing here turns verification off."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from portero.router.snapshot import CertificateEntry
from portero.tls.certs import facts
from tests.integration.router.backend import RecordingBackend
from tests.integration.router.conftest import RouterUnderTest, wait_until
from tests.integration.router.rawhttp import Client
from tests.tls_ca import TestCA

pytestmark = pytest.mark.integration


def entry(chain: Path, key: Path, names: tuple[str, ...] = ()) -> CertificateEntry:
    found = facts(chain.read_bytes())
    return CertificateEntry(names or found.names, str(chain), str(key), found.fingerprint)


def certify(proxy: RouterUnderTest, *entries: CertificateEntry, challenges: tuple[tuple[str, str], ...] = ()) -> None:
    proxy.snapshot = dataclasses.replace(
        proxy.snapshot, version=proxy.snapshot.version + 1, certificates=entries, challenges=challenges
    )
    proxy.call(proxy.router.load, proxy.snapshot)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def secure(
    start_router: Callable[..., RouterUnderTest], backend: RecordingBackend, ca: TestCA
) -> tuple[RouterUnderTest, int]:
    routes = [
        {"host": "a.test", "service": "app", "redirect_https": True, "hsts": {"max_age_s": 600}},
        {"host": "b.test", "service": "app"},
        {"host": "*.b.test", "service": "app"},
    ]
    proxy = start_router({"app": [backend]}, routes=routes, tls={"certificates": [{"cert_file": "unused"}]})
    certify(proxy, entry(*ca.issue(["a.test"])), entry(*ca.issue(["b.test", "*.b.test"])))
    return proxy, proxy.call(lambda: proxy.router.tls_address[1])


def served_serial(port: int, name: str, ca: TestCA) -> str:
    with Client(port, tls=ca.client_context(), server_name=name) as client:
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert der is not None
        return facts(ssl.DER_cert_to_PEM_cert(der).encode()).serial


def test_sni_picks_each_host_certificate_verified_against_the_root(
    secure: tuple[RouterUnderTest, int], ca: TestCA, backend: RecordingBackend
) -> None:
    proxy, port = secure
    for name in ("a.test", "b.test", "www.b.test"):
        with Client(port, tls=ca.client_context(), server_name=name) as client:
            peer = client.sock.getpeercert()  # type: ignore[attr-defined]
            assert ("DNS", name if name != "www.b.test" else "*.b.test") in peer["subjectAltName"]
            assert client.sock.version() in ("TLSv1.3", "TLSv1.2")  # type: ignore[attr-defined]
            response = client.get("/hello", host=name)
            assert response.status == 200
    # a name no certificate serves gets the first one, which the client then refuses for that name
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        Client(port, tls=ca.client_context(), server_name="c.test")
    wait_until(lambda: proxy.call(lambda: proxy.router.handshakes.get("TLSv1.3", 0)) >= 3, what="handshakes counted")


def test_forwarded_proto_is_https_over_tls_and_http_otherwise(
    secure: tuple[RouterUnderTest, int], ca: TestCA, backend: RecordingBackend
) -> None:
    proxy, port = secure
    with Client(port, tls=ca.client_context(), server_name="b.test") as client:
        # whatever the client claims is replaced (it is not a trusted proxy)
        assert client.get("/", host="b.test", headers=(("X-Forwarded-Proto", "http"),)).status == 200
    with Client(proxy.port) as client:
        assert client.get("/", host="b.test", headers=(("X-Forwarded-Proto", "https"),)).status == 200
    protos = [request.header("x-forwarded-proto") for request in backend.requests]
    assert protos == ["https", "http"]


def test_plain_http_of_a_redirecting_route_gets_308_to_https(secure: tuple[RouterUnderTest, int], ca: TestCA) -> None:
    proxy, port = secure
    with Client(proxy.port) as client:
        response = client.request(b"POST /form?x=1 HTTP/1.1\r\nHost: a.test:8080\r\nContent-Length: 3\r\n\r\nabc")
    assert response.status == 308
    assert response.header("location") == f"https://a.test:{port}/form?x=1"
    with Client(proxy.port) as client:  # a route without the redirect is served over plain HTTP
        assert client.get("/", host="b.test").status == 200


def test_hsts_only_over_https_and_only_where_asked(secure: tuple[RouterUnderTest, int], ca: TestCA) -> None:
    _, port = secure
    with Client(port, tls=ca.client_context(), server_name="a.test") as client:
        assert client.get("/", host="a.test").header("strict-transport-security") == "max-age=600"
    with Client(port, tls=ca.client_context(), server_name="b.test") as client:
        assert client.get("/", host="b.test").header("strict-transport-security") is None


def test_acme_challenge_answered_over_http_only(
    secure: tuple[RouterUnderTest, int], ca: TestCA, backend: RecordingBackend
) -> None:
    proxy, port = secure
    certify(proxy, *proxy.snapshot.certificates, challenges=(("tok-1", "tok-1.thumb"),))
    with Client(proxy.port) as client:  # a host no route names: the CA asks for whatever host it validates
        response = client.get("/.well-known/acme-challenge/tok-1", host="new.test")
    assert (response.status, response.body) == (200, b"tok-1.thumb")
    with Client(proxy.port) as client:  # an unknown token is no challenge: routed (a redirect, here)
        assert client.get("/.well-known/acme-challenge/other", host="a.test").status == 308
    with Client(port, tls=ca.client_context(), server_name="b.test") as client:
        assert client.get("/.well-known/acme-challenge/tok-1", host="b.test").status == 200
    assert [r.target for r in backend.requests] == ["/.well-known/acme-challenge/tok-1"]  # over HTTPS: routed


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")  # the old versions are the point
def test_tls_below_1_2_is_refused_and_counted(secure: tuple[RouterUnderTest, int], ca: TestCA) -> None:
    proxy, port = secure
    old = ca.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")  # the client would; the router must not
    with pytest.raises(ssl.SSLError):
        Client(port, tls=old, server_name="a.test")
    wait_until(lambda: proxy.call(lambda: proxy.router.handshakes.get("failed:protocol", 0)) == 1, what="failure")
    with socket.create_connection(("127.0.0.1", port)) as raw:  # plain HTTP on the HTTPS port
        raw.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        raw.settimeout(5)
        assert raw.recv(100) == b""  # closed without an answer (no plaintext leaks from the TLS side)
    wait_until(lambda: proxy.call(lambda: proxy.router.handshakes.get("failed:protocol", 0)) == 2, what="failure")


def test_a_new_certificate_reaches_new_connections_and_leaves_open_ones_alone(
    secure: tuple[RouterUnderTest, int], ca: TestCA
) -> None:
    proxy, port = secure
    first = served_serial(port, "a.test", ca)
    keep = Client(port, tls=ca.client_context(), server_name="a.test")
    assert keep.get("/", host="a.test").status == 200
    renewed = entry(*ca.issue(["a.test"]))
    certify(proxy, renewed, *proxy.snapshot.certificates[1:])
    assert served_serial(port, "a.test", ca) == facts(Path(renewed.cert_file).read_bytes()).serial != first
    for _ in range(3):  # the open connection goes on, with its first certificate
        assert keep.get("/", host="a.test").status == 200
    old = facts(ssl.DER_cert_to_PEM_cert(keep.sock.getpeercert(binary_form=True)).encode())  # type: ignore[attr-defined]
    assert old.serial == first
    keep.close()


def test_a_certificate_that_does_not_load_keeps_the_one_served(
    secure: tuple[RouterUnderTest, int], ca: TestCA, tmp_path: Path
) -> None:
    proxy, port = secure
    first = served_serial(port, "a.test", ca)
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    events: list[str] = []
    proxy.call(proxy.router.on_event, lambda kind, *_: events.append(kind))
    bad = CertificateEntry(("a.test",), str(broken), str(broken), "0" * 64)
    certify(proxy, bad, *proxy.snapshot.certificates[1:])
    assert served_serial(port, "a.test", ca) == first
    assert events == ["tls.load_failed"]


def test_a_slow_handshake_is_cut_and_counted(
    start_router: Callable[..., RouterUnderTest], backend: RecordingBackend, ca: TestCA
) -> None:
    proxy = start_router({"app": [backend]}, tls={"certificates": [{"cert_file": "x"}], "handshake_timeout_s": 0.5})
    certify(proxy, entry(*ca.issue(["a.test"])))
    port = proxy.call(lambda: proxy.router.tls_address[1])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        started = time.monotonic()
        raw.settimeout(5)
        assert raw.recv(100) == b""
        assert time.monotonic() - started < 3
    wait_until(lambda: proxy.call(lambda: proxy.router.handshakes.get("failed:timeout", 0)) == 1, what="timeout")
