"""The election's Redis half, in process against a real redis-server: SET NX PX with a fencing token, the
compare-and-extend renewal, the release, and the fenced store refusing a leader that no longer leads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from portero.cluster.leader import Election
from portero.cluster.lease import Timing
from portero.store import ServiceRecord, StaleLeader
from portero.store.redis import RedisStore
from portero.tasks import spawn

pytestmark = pytest.mark.timeout(60)
FAST = Timing(lease_s=1.0, renew_every_s=0.3, acquire_every_s=0.1)
LONG = Timing(lease_s=5.0, renew_every_s=0.3, acquire_every_s=0.1)  # to tell a release from an expiry


class Member:
    def __init__(self, name: str, url: str, timing: Timing = FAST) -> None:
        self.store = RedisStore(url, prefix="t", timeout_s=0.5)
        self.election = Election(self.store, name, f"http://{name}", timing)
        self.terms: list[int] = []
        self.stale = 0
        self.task: asyncio.Task[None] | None = None

        async def lead(token: int) -> None:
            self.store.fence = token
            self.terms.append(token)

        self.election.on_lead.append(lead)
        self.store.on_stale = self._stale

    def _stale(self) -> None:
        self.stale += 1

    def start(self) -> None:
        self.task = spawn(self.election.run(), name=f"election:{self.election.identity}")

    async def kill(self) -> None:
        """Dies without a word: no release, no more renewals."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def members(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[tuple[Member, Member]]:
    timing = getattr(request, "param", FAST)
    a, b = Member("a", redis_server.url, timing), Member("b", redis_server.url, timing)
    yield a, b
    for member in (a, b):
        if member.task is not None and not member.task.done():
            await member.kill()
        await member.store.close()


async def until(what: str, predicate: Any, timeout_s: float = 5.0) -> float:
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout_s, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
    return time.monotonic() - began


async def test_one_leads_the_other_takes_over_within_the_lease_and_the_first_is_fenced_off(
    members: tuple[Member, Member],
) -> None:
    a, b = members
    a.start()
    await until("a to lead", lambda: a.election.leading)
    b.start()
    await until("b to see a lead", lambda: b.election.leader["id"] == "a")
    await asyncio.sleep(3 * FAST.lease_s)  # renewals keep a in front all this while
    assert a.election.leading
    assert not b.election.leading
    assert a.terms == [1]
    await a.store.put_service(ServiceRecord("portal", 2, 2, 1))

    await a.kill()
    took_s = await until("b to take over", lambda: b.election.leading)

    assert took_s <= FAST.lease_s + FAST.acquire_every_s + 0.5
    assert b.terms == [2]
    with pytest.raises(StaleLeader):
        await a.store.put_service(ServiceRecord("portal", 9, 2, 1))  # a, paused or cut off, writes late
    assert a.stale == 1
    await b.store.put_service(ServiceRecord("portal", 3, 2, 1))
    assert (await b.store.get_services())["portal"].desired == 3


@pytest.mark.parametrize("members", [LONG], indirect=True)
async def test_a_leader_that_steps_down_gives_the_lease_back_at_once(members: tuple[Member, Member]) -> None:
    a, b = members
    a.start()
    await until("a to lead", lambda: a.election.leading)
    b.start()
    await asyncio.sleep(0.3)

    await a.election.step_down("going away")
    took_s = await until("b to take over", lambda: b.election.leading)

    assert took_s < LONG.lease_s / 2  # no waiting for the lease to expire
    assert b.terms == [2]
    assert {**await a.election.members()} == {"a": "http://a", "b": "http://b"}
    await a.election.absent()
    assert set(await b.election.members()) == {"b"}


async def test_with_redis_gone_the_leader_stops_acting_before_anybody_else_could_have_taken_over(
    members: tuple[Member, Member], redis_server: Any
) -> None:
    a, _ = members
    a.start()
    await until("a to lead", lambda: a.election.leading)
    await asyncio.sleep(0.5)

    redis_server.stop()
    stopped = time.monotonic()
    await until("a to stop leading", lambda: not a.election.leading, timeout_s=3)
    paused_after = time.monotonic() - stopped

    assert paused_after < FAST.lease_s  # its last renewal was at most renew_every_s before the stop
    assert a.election.lease.reachable is False
    redis_server.start()
    await until("a to lead again", lambda: a.election.leading, timeout_s=5)
    assert a.terms[-1] > a.terms[0]  # a new token even from an emptied Redis
