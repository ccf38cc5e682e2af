"""The one owner of desired state (desired.py, issue 17): intents in, records persisted first, the supervisor's
groups and the router's split derived; on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portero.desired import DesiredState, DropHolds, Hold, Load, Release, Rollout, Scale, SetServices
from portero.revisions import Revision
from portero.spec.models import ServiceSpec
from portero.store import ServiceRecord, SqliteStore
from portero.store.base import dropped
from portero.supervisor.decide import Desired

PORTAL = ServiceSpec(command=("app",))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    await opened.close()


@pytest.fixture
async def desired(store: SqliteStore) -> DesiredState:
    state = DesiredState(store)
    await state.apply(SetServices({"portal": PORTAL}, {"portal": ServiceRecord("portal", 3, 3, 1, "d1")}))
    return state


async def test_a_hold_wins_over_the_record_until_its_own_release(desired: DesiredState, store: SqliteStore) -> None:
    told: list[int] = []
    desired.observers.append(lambda: told.append(1))
    rollout = Rollout("dep-1", 2, 1, ((1, 3),), {2: 0.1, 1: 0.9})
    await desired.apply(Hold("portal", rollout))
    assert desired.holder("portal") == "dep-1"
    assert desired.groups["portal"] == Desired("portal", 2, 1, PORTAL.health, PORTAL.restart, 10.0, ((1, 3),))
    assert desired.traffic == {"portal": {2: 0.1, 1: 0.9}}
    assert desired.serving() == {"portal": 1}
    await desired.apply(Release("portal", "dep-other", 2, "d2"))  # not the holder's: the hold stays
    assert desired.holder("portal") == "dep-1"
    await desired.apply(Release("portal", "dep-1", 2, "d2"))
    assert (desired.holder("portal"), desired.traffic) == (None, {})
    assert desired.groups["portal"] == Desired("portal", 2, 3, PORTAL.health, PORTAL.restart, 10.0)
    assert (await store.get_services())["portal"] == ServiceRecord("portal", 3, 3, 2, "d2")
    assert len(told) == 3


async def test_a_rolling_hold_serves_both_revisions_and_a_release_keeps_the_recorded_digest(
    desired: DesiredState, store: SqliteStore
) -> None:
    await desired.apply(Hold("portal", Rollout("dep-1", 2, 2, ((1, 2),))))
    assert desired.serving() == {"portal": None}  # every ready replica of either revision shares the requests
    await desired.apply(Release("portal", "dep-1", 1))  # rolled back: the file's digest was never applied
    assert (await store.get_services())["portal"] == ServiceRecord("portal", 3, 3, 1, "d1")


async def test_a_store_that_does_not_answer_changes_nothing(desired: DesiredState, store: SqliteStore) -> None:
    await store.close()  # every write fails from here on
    with pytest.raises(Exception):  # noqa: B017,PT011 (whatever the store raises, it reaches the caller)
        await desired.apply(Scale("portal", 5))
    assert desired.records["portal"].desired == 3
    assert desired.groups["portal"].replicas == 3


async def test_a_service_the_spec_loses_is_deleted_with_its_hold(desired: DesiredState, store: SqliteStore) -> None:
    await desired.apply(Hold("portal", Rollout("dep-1", 2, 1)))
    await desired.apply(SetServices({}, {}))
    assert (desired.groups, desired.holder("portal"), await store.get_services()) == ({}, None, {})


async def test_a_followers_load_is_taken_as_it_is_and_dropping_holds_clears_the_split(
    desired: DesiredState, store: SqliteStore
) -> None:
    theirs = {"portal": ServiceRecord("portal", 4, 3, 2, "d2")}
    await desired.apply(Load(theirs, {"portal": {2: 0.5, 1: 0.5}}))
    assert desired.traffic == {"portal": {2: 0.5, 1: 0.5}}
    assert (await store.get_services())["portal"].desired == 3  # the leader's view, not written back
    await desired.apply(DropHolds())
    assert desired.traffic == {}


def test_history_drops_the_oldest_beyond_keep_but_never_a_pinned_revision() -> None:
    assert dropped(list(range(1, 13)), 10, frozenset()) == [1, 2]
    assert dropped(list(range(1, 13)), 10, frozenset({1})) == [2]
    assert dropped(list(range(1, 13)), 10, frozenset({1, 2})) == []
    assert dropped([3, 1, 2], 10, frozenset()) == []


async def test_the_store_keeps_the_serving_revision_beyond_the_newest_ten(store: SqliteStore) -> None:
    for number in range(1, 14):
        revision = Revision("portal", number, f"d{number}", {}, float(number), "test")
        await store.add_revision(revision, keep=10, pinned=frozenset({1}))
    assert [r.number for r in await store.get_revisions("portal")] == [1, *range(4, 14)]
