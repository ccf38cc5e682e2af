"""Two real porteros on two loopback ports sharing one real redis-server: one registry, one leader, and
routing that carries on while Redis is away. Figures are printed (run with -s to see them)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from portero.runtimes.ports import free_port
from tests.integration.portero_cli import Portero, portal_service

pytestmark = pytest.mark.timeout(240)
LEASE_S = 5.0


@pytest.fixture
def pair(tmp_path: Path, redis_server: Any) -> Iterator[tuple[Portero, Portero]]:
    """A leads (it starts first), B follows; the same spec, REDIS_URL in their environment."""
    members = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        member = Portero(tmp_path / name, env={"REDIS_URL": redis_server.url})
        member.write_spec({"portal": portal_service(replicas=2)}, store={"lease_s": LEASE_S})
        members.append(member)
    a, b = members
    try:
        a.cli("up", "--detach")
        a.ready(2)
        b.cli("up", "--detach")
        b.wait("B to route to A's replicas", lambda: len(b.ready(2)) == 2)
        assert a.get("/cluster")["role"] == "leader"
        assert b.get("/cluster")["role"] == "follower"
        yield a, b
    finally:
        for member in members:
            member.stop()


class Backend:
    """A server portero does not run, answering with its name."""

    def __init__(self, name: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Replica", name)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def routed_addresses(member: Portero) -> dict[str, str]:
    servers = member.get("/load-balancer/servers", service="portal")["servers"]
    return {s["address"]: s["state"] for s in servers}


def test_a_server_registered_on_one_portero_is_routed_by_the_other_within_a_second(
    pair: tuple[Portero, Portero],
) -> None:
    a, b = pair
    backend = Backend("outside")
    try:
        began = time.monotonic()
        # Slow start gives it 10 at first, against 1 + 1 for the two replicas: the balancer picks it soon.
        body = {"service": "portal", "address": backend.address, "weight": 100}
        response = a.http.post(a.url + "/load-balancer/register", json=body)
        assert response.status_code == 201, response.text
        b.wait("B to list the server", lambda: backend.address in routed_addresses(b), timeout_s=5, step_s=0.01)
        listed_s = time.monotonic() - began

        def routed() -> bool:
            answer = b.http.get(f"http://127.0.0.1:{b.router_port}/health")
            return answer.headers.get("x-replica") == "outside"

        b.wait("B's router to send a request to it", routed, timeout_s=10, step_s=0.01)
        routed_s = time.monotonic() - began
        print(f"\nregistered on A: listed by B after {listed_s * 1000:.0f} ms, routed after {routed_s * 1000:.0f} ms")
        assert listed_s < 1.0
        assert routed_s < 2.0  # the first pick may wait for the balancer's turn

        began = time.monotonic()
        response = b.http.post(
            b.url + "/load-balancer/weight", json={"service": "portal", "address": backend.address, "weight": 70}
        )
        assert response.status_code == 200, response.text
        a.wait("A to take the new weight", lambda: _weight(a, backend.address) == 70, timeout_s=5, step_s=0.01)
        print(f"reweighted on B: seen by A after {(time.monotonic() - began) * 1000:.0f} ms")

        began = time.monotonic()
        ref = {"service": "portal", "address": backend.address}
        response = b.http.post(b.url + "/load-balancer/deregister", json=ref)
        assert response.status_code == 200, response.text
        a.wait("A to let it go", lambda: routed_addresses(a).get(backend.address) in (None, "draining"), 5, 0.01)
        print(f"deregistered on B: draining on A after {(time.monotonic() - began) * 1000:.0f} ms")
        assert time.monotonic() - began < 1.0
    finally:
        backend.close()


def _weight(member: Portero, address: str) -> int | None:
    servers = member.get("/load-balancer/servers", service="portal")["servers"]
    return next((s["weight"] for s in servers if s["address"] == address), None)


def test_killing_the_leader_hands_the_controllers_over_and_a_scale_up_during_it_happens_once(
    pair: tuple[Portero, Portero],
) -> None:
    a, b = pair
    before = {r["id"] for r in a.replicas()}
    killed_at = time.monotonic()
    os.kill(a.pid(), signal.SIGKILL)

    attempts = refused = 0
    while True:  # the operator (or a script) asks B, which forwards to the leader, or says to retry
        attempts += 1
        response = b.http.post(b.url + "/services/portal/scale", json={"replicas": 3})
        if response.status_code == 200:
            break
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after") == "1"
        refused += 1
        time.sleep(0.2)
        assert time.monotonic() - killed_at < 30
    accepted_s = time.monotonic() - killed_at
    cluster = b.get("/cluster")
    assert cluster["role"] == "leader"
    print(f"\nB leads {accepted_s:.2f} s after A was killed (lease {LEASE_S:g} s); scale refused {refused} time(s)")
    assert accepted_s <= LEASE_S + 1.5

    ready = b.ready(3)
    time.sleep(2)  # a second leader, had there been one, would have started more by now
    replicas = b.replicas()
    assert len(replicas) == 3
    assert before <= {r["id"] for r in replicas}  # A's two were adopted, not replaced
    assert {r["id"] for r in ready} == {r["id"] for r in replicas}
    events = b.events(service="portal")
    scaled = [e for e in events if e["kind"] == "service.scaled"]
    started = [e for e in events if e["kind"] == "replica.started"]
    assert [e["message"] for e in scaled] == ["scaled from 2 to 3"]
    assert len(started) == 3  # A's two, then exactly one more
    adopted = [e for e in b.events() if e["kind"] == "replica.adopted"]
    assert {e["subject"] for e in adopted} == before


def test_while_redis_is_away_both_routers_serve_every_request_and_an_alert_comes_and_goes(
    pair: tuple[Portero, Portero], redis_server: Any
) -> None:
    a, b = pair
    stop = threading.Event()
    results: dict[str, list[int]] = {"a": [], "b": []}
    failures: list[str] = []

    def load(name: str, member: Portero) -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:  # one keep-alive connection
            while not stop.is_set():
                try:
                    status = client.get(f"http://127.0.0.1:{member.router_port}/").status_code
                except httpx.HTTPError as exc:
                    failures.append(f"{name}: {exc!r}")
                    continue
                results[name].append(status)
                time.sleep(0.01)

    threads = [threading.Thread(target=load, args=item) for item in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        redis_server.stop()
        stopped_at = time.monotonic()
        for member in (a, b):
            member.wait("the store-unreachable alert", lambda m=member: _alert(m) == "firing", timeout_s=8)
        b.wait("the leader to pause", lambda: a.get("/cluster")["role"] == "follower", timeout_s=LEASE_S + 3)
        assert a.get("/health")["cluster"]["store_up"] is False
        refused = a.http.post(a.url + "/load-balancer/register", json={"service": "portal", "address": "127.0.0.1:9"})
        assert refused.status_code == 503, refused.text  # refused, not dropped
        assert "does not answer" in refused.json()["error"]["message"]
        time.sleep(max(10 - (time.monotonic() - stopped_at), 0))
        redis_server.start()  # without persistence: Redis comes back empty, the leader restores it
        restarted_at = time.monotonic()
        leader = a.wait("a leader again", lambda: _leader(a, b), timeout_s=LEASE_S + 5)
        for member in (a, b):
            member.wait("the alert to resolve", lambda m=member: _alert(m) is None, timeout_s=10)
        print(f"\nRedis away 10 s; {leader} leads again {time.monotonic() - restarted_at:.2f} s after it returned")
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"requests through A: {len(results['a'])}, through B: {len(results['b'])}; failures: {len(failures)}")
    assert failures == []
    assert set(results["a"]) == {200}
    assert set(results["b"]) == {200}
    assert len(results["a"]) > 100
    assert len(results["b"]) > 100

    # Consistent afterwards: both see the same two replicas, still the first ones, and the store has them.
    ids_a = {r["id"] for r in a.replicas()}
    assert ids_a == {r["id"] for r in b.replicas()}
    assert len(ids_a) == 2
    stored = json.loads(redis.Redis.from_url(redis_server.url).get("portero:replicas") or "[]")
    assert {r["id"] for r in stored} == ids_a
    strays = [e for e in a.events() if e["kind"] in ("replica.started", "replica.stray") and e["subject"] not in ids_a]
    assert strays == []
    kinds = [e["kind"] for e in a.events()]
    assert "alert.firing" in kinds
    assert "alert.resolved" in kinds


def _alert(member: Portero) -> str | None:
    alerts = member.get("/monitoring/alerts")["alerts"]
    return next((x["state"] for x in alerts if x["labels"].get("alertname") == "store-unreachable"), None)


def _leader(*members: Portero) -> str | None:
    roles = {m.get("/cluster")["instance"]: m.get("/cluster")["role"] for m in members}
    leaders = [name for name, role in roles.items() if role == "leader"]
    assert len(leaders) <= 1, roles
    return leaders[0] if leaders else None


def test_a_portal_login_holds_whichever_replica_answers(tmp_path: Path, redis_server: Any) -> None:
    member = Portero(tmp_path, env={"REDIS_URL": redis_server.url})
    service = portal_service(replicas=3)
    service["env"] = {**service["env"], "REDIS_URL": redis_server.url}
    member.write_spec({"portal": service})
    try:
        member.cli("up", "--detach")
        member.ready(3)
        router = f"http://127.0.0.1:{member.router_port}"
        with httpx.Client(trust_env=False, timeout=10) as browser:  # keeps the cookie, as a browser does
            assert browser.post(router + "/login", json={"name": "Ana", "unit": "Lote 42"}).status_code == 200
            answered: dict[str, int] = {}
            for _ in range(60):
                response = browser.get(router + "/me")
                assert response.status_code == 200, response.text
                assert response.json() == {"user": {"name": "Ana", "unit": "Lote 42"}}
                replica = response.headers["x-replica"]
                answered[replica] = answered.get(replica, 0) + 1
            print(f"\n/me answered with the login by: {answered}")
            assert len(answered) == 3  # every replica knew the user
            browser.post(router + "/logout")
            assert {browser.get(router + "/me").status_code for _ in range(6)} == {401}
    finally:
        member.stop()


def test_a_spec_applied_through_the_follower_is_applied_once_and_each_keeps_its_own_ports(
    pair: tuple[Portero, Portero],
) -> None:
    a, b = pair
    b.write_spec({"portal": portal_service(replicas=3)}, store={"lease_s": LEASE_S})  # B's own ports, as before

    result = b.cli("apply")

    assert "services.portal.replicas.initial: 2 -> 3: the supervisor keeps the new count" in result.stdout, (
        result.stdout
    )
    a.ready(3)
    b.wait("B to route to the three", lambda: len(b.ready(3)) == 3)
    assert len(a.replicas()) == 3
    applied = [e for e in a.events() if e["kind"] == "spec.applied"]
    assert len([e for e in applied if "replicas.initial: 2 -> 3" in e["message"]]) == 1
    for member in (a, b):  # each router still listens where its own spec says
        assert member.http.get(f"http://127.0.0.1:{member.router_port}/health").status_code == 200
    assert b.get("/cluster")["role"] == "follower"


def test_a_token_made_on_one_portero_is_accepted_by_the_other_until_revoked(pair: tuple[Portero, Portero]) -> None:
    a, b = pair
    viewer = b.cli("token", "create", "--role", "viewer", "--name", "made-on-b").stdout.strip()
    token_id = next(t["id"] for t in json.loads(b.cli("token", "list", "--json").stdout) if t["name"] == "made-on-b")
    headers = {"Authorization": f"Bearer {viewer}"}

    def status_on_a() -> int:
        return httpx.get(f"{a.url}/containers/list", headers=headers, trust_env=False).status_code

    a.wait("A to accept B's token", lambda: status_on_a() == 200, timeout_s=5)
    assert httpx.post(f"{a.url}/services/portal/scale", json={"replicas": 3}, headers=headers).status_code == 403
    b.cli("token", "revoke", token_id)
    a.wait("A to refuse the revoked token", lambda: status_on_a() == 401, timeout_s=5)


def test_after_a_frozen_redis_a_leader_is_back_within_1_5_s_and_the_history_and_answers_tell_the_truth(
    pair: tuple[Portero, Portero], redis_server: Any
) -> None:
    """Redis frozen 10 s (SIGSTOP: connections open, calls time out; what was sent meanwhile, Redis runs when it
    wakes). Writes keep coming to both porteros; every refusal must say when to retry."""
    a, b = pair
    stop = threading.Event()
    refusals: list[tuple[str, str | None]] = []

    def write(member: Portero) -> None:
        with httpx.Client(trust_env=False, timeout=30, auth=member.auth) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    answer = client.post(member.url + "/services/portal/scale", json={"replicas": 2})
                    if answer.status_code == 503:
                        refusals.append((answer.json()["error"]["message"], answer.headers.get("retry-after")))
                time.sleep(0.25)

    writers = [threading.Thread(target=write, args=(member,)) for member in (a, b)]
    for thread in writers:
        thread.start()
    try:
        time.sleep(1)
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        time.sleep(10)
        redis_server.process.send_signal(signal.SIGCONT)
        woke_at = time.monotonic()
        leader = a.wait("a leader again", lambda: _leader(a, b), timeout_s=LEASE_S + 5, step_s=0.02)
        back_s = time.monotonic() - woke_at
        for member in (a, b):
            member.wait("the alert to resolve", lambda m=member: _alert(m) is None, timeout_s=10)
        time.sleep(1.5)  # writes during the takeover too
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    print(f"\nRedis frozen 10 s; {leader} leads again {back_s:.2f} s after it woke; {len(refusals)} writes refused")
    assert back_s <= 1.5
    assert refusals  # the writes did meet the outage
    assert [message for message, retry in refusals if retry != "1"] == []

    def resolved() -> list[str] | None:
        """The alert's history once every firing has its resolution (one may still be on its way to the store)."""
        kinds = [e["kind"] for e in a.events() if e["subject"] == "store-unreachable"]
        return kinds if kinds.count("alert.resolved") == kinds.count("alert.firing") else None

    history = a.wait("a resolution for every firing in the history", resolved, timeout_s=10)
    assert history.count("alert.firing") >= 1, history

    follower = b if leader == a.get("/cluster")["instance"] else a
    said = follower.cli("down").stdout
    print(said.strip())
    assert "no replica left running" not in said
    assert "2 replica(s) still running" in said
    assert "the other porteros on this Redis keep them" in said
    remaining = a if follower is b else b
    assert len(remaining.ready(2)) == 2
