"""The `Store` contract on SQLite and Redis: what goes in comes back out, survives a restart (a reconnection),
and is never seen half-written. Redis runs as a real redis-server (the `redis_server` fixture)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from portero.events import Event
from portero.replicas import Process, Replica, ReplicaState, StopIntent
from portero.revisions import Revision
from portero.store import ServerRecord, ServiceRecord, SqliteStore, StaleLeader, Store, StoreUnavailable
from portero.store.redis import RedisStore

Opener = Callable[[], Any]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / ".portero" / "state.db"  # a directory that does not exist yet


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, db_path: Path) -> Opener:
    """Opens a new store over the same state: the same SQLite file, or the same Redis and key prefix."""
    if request.param == "sqlite":
        return lambda: SqliteStore(db_path)
    server = request.getfixturevalue("redis_server")
    return lambda: RedisStore(server.url, prefix="test")


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    opened = open_store()
    yield opened
    await opened.close()


def revision(service: str, number: int, reason: str = "spec applied") -> Revision:
    template = {"command": ["run", f"--v{number}"], "env": {"N": str(number)}}
    return Revision(service, number, f"digest{number:06d}", template, 1_700_000_000.0 + number, reason)


def full_replica() -> Replica:
    """A replica with every field away from its default."""
    return Replica(
        id="portal-r7",
        service="portal",
        revision=4,
        state=ReplicaState.STOPPING,
        process=Process(host="127.0.0.1", port=41234, pid=4242, started_token=1_700_000_123.25, app_pid=4243),
        created_at=1_700_000_100.5,
        started_at=1_700_000_101.5,
        ready_at=1_700_000_102.5,
        restarts=3,
        backoff_s=4.0,
        next_start_at=1_700_000_200.75,
        last_exit_code=-15,
        stop_intent=StopIntent.HOLD,
        passes=2,
        failures=1,
        unhealthy_since=1_700_000_150.0,
    )


def replicas_for(generation: int, count: int) -> list[Replica]:
    return [
        Replica(
            id=f"portal-{index:02d}",
            service="portal",
            revision=1,
            state=ReplicaState.READY,
            process=Process("127.0.0.1", 40_000 + index, 10_000 + index, float(generation)),
            restarts=generation,
        )
        for index in range(count)
    ]


# --- spec and services ------------------------------------------------------------------------------------------


async def test_a_fresh_store_has_no_spec_services_replicas_or_events(store: Store) -> None:
    assert await store.get_spec() is None
    assert await store.get_services() == {}
    assert await store.get_revisions("portal") == []
    assert await store.load_replicas() == []
    assert await store.get_events() == []


async def test_the_spec_comes_back_as_it_was_put_and_a_new_one_replaces_it(store: Store) -> None:
    first = {"version": 1, "services": {"portal": {"command": ["run"], "env": {"A": "1"}}}}
    second = {"version": 1, "services": {"api": {"command": ["serve"]}}}

    await store.put_spec("portero.yaml", first)
    assert await store.get_spec() == ("portero.yaml", first)

    await store.put_spec("api", second)
    assert await store.get_spec() == ("api", second)


async def test_services_are_put_replaced_and_deleted_by_name(store: Store) -> None:
    await store.put_service(ServiceRecord("portal", desired=3, initial=3, revision=1))
    await store.put_service(ServiceRecord("api", desired=1, initial=1, revision=2))
    await store.put_service(ServiceRecord("portal", desired=5, initial=3, revision=2))

    assert await store.get_services() == {
        "portal": ServiceRecord("portal", desired=5, initial=3, revision=2),
        "api": ServiceRecord("api", desired=1, initial=1, revision=2),
    }

    await store.delete_service("portal")
    await store.delete_service("never-existed")

    assert await store.get_services() == {"api": ServiceRecord("api", desired=1, initial=1, revision=2)}


# --- revisions --------------------------------------------------------------------------------------------------


async def test_revisions_come_back_whole_and_ordered_by_number(store: Store) -> None:
    for number in (2, 1, 3):
        await store.add_revision(revision("portal", number, reason=f"reason {number}"), keep=10)

    revisions = await store.get_revisions("portal")

    assert [r.number for r in revisions] == [1, 2, 3]
    assert revisions[0] == revision("portal", 1, reason="reason 1")


async def test_only_the_last_keep_revisions_of_a_service_are_kept(store: Store) -> None:
    await store.add_revision(revision("api", 1), keep=3)
    for number in range(1, 7):
        await store.add_revision(revision("portal", number), keep=3)

    assert [r.number for r in await store.get_revisions("portal")] == [4, 5, 6]
    assert [r.number for r in await store.get_revisions("api")] == [1]  # other services keep theirs


# --- replicas ---------------------------------------------------------------------------------------------------


async def test_replicas_come_back_in_order_with_every_field(store: Store) -> None:
    saved = [
        full_replica(),
        Replica(id="portal-a1", service="portal", revision=4),  # all defaults, no process
        Replica(
            id="api-b2",
            service="api",
            revision=1,
            state=ReplicaState.STARTING,
            process=Process("10.0.0.5", 5000, 77, 12.5),  # no app_pid
            stop_intent=StopIntent.RESTART,
        ),
    ]

    await store.save_replicas(saved)
    loaded = await store.load_replicas()

    assert loaded == saved
    assert [r.id for r in loaded] == ["portal-r7", "portal-a1", "api-b2"]  # saved order, not sorted
    assert type(loaded[0].state) is ReplicaState
    assert type(loaded[0].process) is Process
    assert type(loaded[0].stop_intent) is StopIntent
    assert loaded[2].process is not None
    assert loaded[2].process.app_pid is None


async def test_saving_replicas_replaces_the_whole_set(store: Store) -> None:
    await store.save_replicas(replicas_for(generation=1, count=4))

    await store.save_replicas([full_replica()])
    assert await store.load_replicas() == [full_replica()]

    await store.save_replicas([])
    assert await store.load_replicas() == []


# --- events -----------------------------------------------------------------------------------------------------


def event(at: float, service: str | None = "portal", kind: str = "replica.started") -> Event:
    return Event(kind, f"{service}-r1", f"at {at}", service=service, at=at, data={"at": at, "nested": [1, "x"]})


async def test_appending_an_event_returns_it_with_a_new_id(store: Store) -> None:
    original = event(10.0)

    first = await store.append_event(original)
    second = await store.append_event(event(11.0))

    assert original.id is None
    assert isinstance(first.id, int)
    assert isinstance(second.id, int)
    assert second.id > first.id
    assert first == Event(
        original.kind, original.subject, original.message, original.service, original.at, original.data, first.id
    )


async def test_events_are_filtered_by_time_and_service(store: Store) -> None:
    stored = [
        await store.append_event(e)
        for e in (event(10.0), event(20.0, service="api"), event(30.0), event(40.0, service=None, kind="spec.applied"))
    ]

    assert await store.get_events() == stored
    assert await store.get_events(since=20.0) == stored[1:]  # `since` is inclusive
    assert await store.get_events(service="portal") == [stored[0], stored[2]]
    assert await store.get_events(since=15.0, service="portal") == [stored[2]]
    assert await store.get_events(since=41.0) == []


async def test_a_limit_returns_the_newest_events_oldest_first(store: Store) -> None:
    stored = [await store.append_event(event(float(at))) for at in range(1, 8)]

    assert await store.get_events(limit=3) == stored[-3:]
    assert await store.get_events(limit=3, service="portal", since=2.0) == stored[-3:]
    assert await store.get_events(limit=100) == stored


# --- durability -------------------------------------------------------------------------------------------------


async def test_everything_survives_closing_and_reopening_the_store(open_store: Opener) -> None:
    spec = {"version": 1, "services": {"portal": {"command": ["run"]}}}
    record = ServiceRecord("portal", desired=2, initial=3, revision=7)
    replicas = [full_replica(), *replicas_for(generation=9, count=2)]
    first = open_store()
    await first.put_spec("portero.yaml", spec)
    await first.put_service(record)
    await first.add_revision(revision("portal", 7), keep=5)
    await first.save_replicas(replicas)
    appended = await first.append_event(event(5.0))
    await first.close()

    second = open_store()
    try:
        assert await second.get_spec() == ("portero.yaml", spec)
        assert await second.get_services() == {"portal": record}
        assert await second.get_revisions("portal") == [revision("portal", 7)]
        assert await second.load_replicas() == replicas
        assert await second.get_events() == [appended]
        assert (await second.append_event(event(6.0))).id != appended.id  # ids are not reused
    finally:
        await second.close()


# --- torn writes ------------------------------------------------------------------------------------------------

# Runs in another interpreter: reads the replicas table through its own connection for a while and reports
# each distinct (row count, generations seen) it observed, with how often.
READER = """
import collections, json, sqlite3, sys, time

path, duration = sys.argv[1], float(sys.argv[2])
db = sqlite3.connect(path, timeout=10)
seen = collections.Counter()
print("ready", flush=True)
deadline = time.monotonic() + duration
while time.monotonic() < deadline:
    bodies = [json.loads(body) for (body,) in db.execute("SELECT body FROM replicas")]
    seen[(len(bodies), tuple(sorted({body["restarts"] for body in bodies})))] += 1
print(json.dumps([[count, list(generations), times] for (count, generations), times in seen.items()]))
"""


async def test_a_reader_in_another_process_never_sees_a_half_saved_set(db_path: Path) -> None:
    store = SqliteStore(db_path)
    try:
        await _race_a_reader(store, db_path)
    finally:
        await store.close()


async def _race_a_reader(store: SqliteStore, db_path: Path) -> None:
    count = 25
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        READER,
        str(db_path),
        "1.0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert reader.stdout is not None
    assert await asyncio.wait_for(reader.stdout.readline(), timeout=10) == b"ready\n"
    reader_done = asyncio.Event()

    async def write() -> int:
        generation = 0
        while not reader_done.is_set():
            generation += 1
            await store.save_replicas(replicas_for(generation, count))
        return generation

    async def read() -> tuple[bytes, bytes]:
        try:
            return await reader.communicate()
        finally:
            reader_done.set()

    written, (out, err) = await asyncio.gather(write(), read())

    assert reader.returncode == 0, err.decode()
    observations = [(rows, tuple(generations), times) for rows, generations, times in json.loads(out)]
    torn = [(rows, generations) for rows, generations, _ in observations if rows != 0 and rows != count]
    mixed = [(rows, generations) for rows, generations, _ in observations if len(generations) > 1]
    assert torn == []
    assert mixed == []
    full_generations = {generations[0] for rows, generations, _ in observations if rows == count}
    assert len(full_generations) >= 10, f"too little overlap to prove anything: {observations}"
    assert max(full_generations) <= written
    assert sum(times for _, _, times in observations) >= 100


# --- registered servers and deployments ------------------------------------------------------------------------


async def test_servers_are_put_reweighted_and_deleted_by_service_and_address(store: Store) -> None:
    await store.put_server(ServerRecord("portal", "127.0.0.1:8001", 10))
    await store.put_server(ServerRecord("portal", "127.0.0.1:8002", 5))
    await store.put_server(ServerRecord("api", "127.0.0.1:8001", 1))
    await store.put_server(ServerRecord("portal", "127.0.0.1:8001", 30))

    servers = sorted(await store.get_servers(), key=lambda s: (s.service, s.address))
    assert servers == [
        ServerRecord("api", "127.0.0.1:8001", 1),
        ServerRecord("portal", "127.0.0.1:8001", 30),
        ServerRecord("portal", "127.0.0.1:8002", 5),
    ]

    await store.delete_server("portal", "127.0.0.1:8001")
    await store.delete_server("portal", "127.0.0.1:9999")
    assert sorted(s.address for s in await store.get_servers() if s.service == "portal") == ["127.0.0.1:8002"]


async def test_deployments_come_back_newest_first_filtered_and_limited(store: Store) -> None:
    for index, service in enumerate(["portal", "api", "portal", "portal"]):
        body = {"id": f"d{index}", "service": service, "state": "running", "steps": [{"n": index}]}
        await store.put_deployment(service, f"d{index}", 1_700_000_000.5 + index, body)
    await store.put_deployment("portal", "d2", 1_700_000_002.5, {"id": "d2", "service": "portal", "state": "done"})

    assert [d["id"] for d in await store.get_deployments()] == ["d3", "d2", "d1", "d0"]
    assert [d["id"] for d in await store.get_deployments("portal")] == ["d3", "d2", "d0"]
    assert [d["id"] for d in await store.get_deployments("portal", limit=2)] == ["d3", "d2"]
    assert (await store.get_deployments("portal", limit=2))[1]["state"] == "done"  # replaced, not added


# --- Redis only: fencing and outages ----------------------------------------------------------------------------


@pytest.fixture
async def redis_store(redis_server: Any) -> AsyncIterator[RedisStore]:
    opened = RedisStore(redis_server.url, prefix="test", timeout_s=0.5)
    yield opened
    await opened.close()


async def test_a_write_under_a_stale_fencing_token_is_refused_and_changes_nothing(redis_store: RedisStore) -> None:
    client = redis_store.client
    redis_store.fence = int(await client.incr(redis_store.keys.epoch))  # this portero acquired the lease
    await redis_store.put_service(ServiceRecord("portal", 2, 2, 1))
    await client.incr(redis_store.keys.epoch)  # another portero acquired it since

    with pytest.raises(StaleLeader, match="another portero leads"):
        await redis_store.put_service(ServiceRecord("portal", 9, 2, 1))
    with pytest.raises(StaleLeader):
        await redis_store.save_replicas([full_replica()])

    assert await redis_store.get_services() == {"portal": ServiceRecord("portal", 2, 2, 1)}
    assert await redis_store.load_replicas() == []
    appended = await redis_store.append_event(event(1.0))  # the event log is everybody's
    assert appended.id is not None


async def test_writes_publish_their_change_and_a_refused_write_publishes_nothing(redis_store: RedisStore) -> None:
    redis_store.origin = "me"
    pubsub = redis_store.client.pubsub()
    await pubsub.subscribe(redis_store.keys.changes)
    await pubsub.get_message(timeout=1)  # the subscription's confirmation
    await redis_store.put_server(ServerRecord("portal", "127.0.0.1:8001", 7))
    redis_store.fence = 41  # no such epoch: refused
    with pytest.raises(StaleLeader):
        await redis_store.save_replicas([])
    redis_store.fence = None
    await redis_store.save_replicas([])

    messages = []
    while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        messages.append(json.loads(message["data"]))
    await pubsub.aclose()

    assert messages == [
        {"kind": "server", "op": "put", "service": "portal", "address": "127.0.0.1:8001", "weight": 7, "origin": "me"},
        {"kind": "state", "origin": "me"},
    ]


async def test_while_redis_is_away_writes_fail_loudly_and_events_wait_in_order(
    redis_store: RedisStore, redis_server: Any
) -> None:
    await redis_store.append_event(event(1.0))
    redis_server.stop()

    with pytest.raises(StoreUnavailable, match="does not answer"):
        await redis_store.put_service(ServiceRecord("portal", 2, 2, 1))
    assert redis_store.up is False
    kept = [await redis_store.append_event(event(float(at))) for at in (2, 3)]
    assert [e.id for e in kept] == [None, None]
    assert redis_store.pending_events == 2

    redis_server.start()  # no persistence in the fixture: Redis comes back empty
    assert await redis_store.ping()
    await redis_store.append_event(event(4.0))

    assert [e.at for e in await redis_store.get_events()] == [2.0, 3.0, 4.0]
    assert redis_store.pending_events == 0
    assert redis_store.up is True


async def test_an_event_sent_again_after_a_frozen_redis_ran_the_first_call_is_appended_once(
    redis_store: RedisStore, redis_server: Any
) -> None:
    """A call that timed out while Redis was frozen still runs when it wakes (its bytes were in Redis's socket):
    the event kept and sent again must not be in the log twice (the history then had two firings, one resolution)."""
    await redis_store.append_event(event(1.0))  # a connection open, as a running portero has
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        kept = await redis_store.append_event(event(2.0))
        assert kept.id is None
        assert redis_store.pending_events == 1
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert await redis_store.ping()
    await redis_store.append_event(event(3.0))  # flushes the kept one first

    assert [e.at for e in await redis_store.get_events()] == [1.0, 2.0, 3.0]
    assert redis_store.pending_events == 0
