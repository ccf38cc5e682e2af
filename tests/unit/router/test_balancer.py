"""The balancers as picks over a fake clock: sequences, shares, stickiness, and what peek promises."""

from __future__ import annotations

import hashlib
import itertools
import random
import zlib
from bisect import bisect_left
from collections import Counter
from typing import cast

import pytest

from portero.router.balancer import (
    Balancer,
    BalancerName,
    ConsistentHash,
    LeastRequests,
    SmoothWeightedRoundRobin,
    effective_weight,
    make_balancer,
)
from portero.router.target import Target

KEYS = [f"session-{n}".encode() for n in range(10_000)]


def endpoints(since: float = 0.0, **weights: int) -> list[Target]:
    return [Target(key, weight, since) for key, weight in weights.items()]


def picks(balancer: Balancer, targets: list[Target], count: int, now: float = 1000.0) -> list[str]:
    chosen = [balancer.pick(targets, now) for _ in range(count)]
    return [target.key for target in chosen if target is not None]


def shares(keys: list[str]) -> dict[str, float]:
    return {key: count / len(keys) for key, count in Counter(keys).items()}


def never(*_: object) -> float:
    raise AssertionError("peek must not draw random numbers")


# --- Target and slow start ---------------------------------------------------------------------------------------


def test_a_negative_weight_is_refused_with_its_value():
    with pytest.raises(ValueError, match=r"web:1: .*-1"):
        Target("web:1", -1)


@pytest.mark.parametrize(
    ("now", "slow_start_s", "expected"),
    [
        (100.0, 10.0, 1.0),  # just eligible: 10 % of 10
        (105.0, 10.0, 5.5),  # half way: 10 % + 45 %
        (110.0, 10.0, 10.0),  # window over: all of it
        (500.0, 10.0, 10.0),
        (90.0, 10.0, 1.0),  # `since` in the future: the start of the ramp, not less
        (100.0, 0.0, 10.0),  # no slow start
        (90.0, 0.0, 10.0),
    ],
)
def test_effective_weight_ramps_linearly_from_a_tenth(now, slow_start_s, expected):
    assert effective_weight(Target("a", 10, since=100.0), now, slow_start_s) == pytest.approx(expected)


def test_effective_weight_of_a_zero_weight_is_zero_even_in_slow_start():
    assert effective_weight(Target("a", 0, since=100.0), 100.0, 10.0) == 0.0


# --- Smooth weighted round robin ---------------------------------------------------------------------------------


def test_round_robin_interleaves_like_nginx():
    targets = endpoints(a=5, b=1, c=1)
    assert picks(SmoothWeightedRoundRobin(), targets, 14) == list("aabacaa" * 2)


def test_round_robin_shares_match_the_weights_over_10000_picks():
    targets = endpoints(a=5, b=3, c=2)
    got = shares(picks(SmoothWeightedRoundRobin(), targets, 10_000))
    for target in targets:
        assert got[target.key] == pytest.approx(target.weight / 10, abs=0.005)


def test_peek_names_the_next_pick_and_changes_nothing():
    balancer, targets = SmoothWeightedRoundRobin(), endpoints(a=5, b=1, c=1)
    seen = []
    for _ in range(14):
        before = [target.current for target in targets]
        peeked = balancer.peek(targets, 1000.0)
        assert balancer.peek(targets, 1000.0) is peeked
        assert [target.current for target in targets] == before
        picked = balancer.pick(targets, 1000.0)
        assert picked is peeked
        assert picked is not None
        seen.append(picked.key)
    assert seen == list("aabacaa" * 2)  # peeking in between did not disturb the order


def test_a_zero_weight_is_never_picked_and_none_when_nobody_can_be():
    balancer = SmoothWeightedRoundRobin()
    assert set(picks(balancer, endpoints(a=0, b=1, c=2), 300)) == {"b", "c"}
    assert balancer.pick(endpoints(a=0, b=0), 0.0) is None
    assert balancer.peek(endpoints(a=0), 0.0) is None
    assert balancer.pick([], 0.0) is None


def test_slow_start_ramps_a_new_endpoints_share_over_its_window():
    balancer = SmoothWeightedRoundRobin(slow_start_s=60.0)
    targets = [*endpoints(a=1, b=1), Target("new", 1, since=1000.0)]
    for offset, expected in [(0.0, 0.1 / 2.1), (30.0, 0.55 / 2.55), (60.0, 1 / 3), (600.0, 1 / 3)]:
        got = shares(picks(balancer, targets, 2_000, now=1000.0 + offset))
        assert got["new"] == pytest.approx(expected, abs=0.005), offset


def test_endpoints_added_and_removed_mid_stream_join_smoothly():
    balancer, targets = SmoothWeightedRoundRobin(), endpoints(a=1, b=1)
    picks(balancer, targets, 101)  # leave a running weight behind
    targets.append(Target("c", 1))
    after = picks(balancer, targets, 30)
    assert Counter(after) == {"a": 10, "b": 10, "c": 10}
    assert all(first != second for first, second in itertools.pairwise(after))  # interleaved, no bursts
    del targets[1]
    assert Counter(picks(balancer, targets, 30)) == {"a": 15, "c": 15}


# --- Least requests ----------------------------------------------------------------------------------------------


def test_least_requests_sends_to_the_endpoint_with_fewer_in_flight():
    targets = endpoints(a=1, b=1, c=1)
    for target, busy in zip(targets, (0, 5, 10), strict=True):
        target.in_flight = busy
    got = Counter(picks(LeastRequests(random.Random(1).random), targets, 3_000))
    assert got["c"] == 0  # the busiest loses every duel it is drawn into
    assert got["a"] / 3_000 == pytest.approx(2 / 3, abs=0.03)  # a is in two of the three pairs


def test_least_requests_compares_in_flight_per_weight():
    heavy, light = Target("heavy", 3), Target("light", 1)
    heavy.in_flight, light.in_flight = 2, 1  # 0.67 per weight against 1.0
    assert set(picks(LeastRequests(random.Random(2).random), [heavy, light], 100)) == {"heavy"}


@pytest.mark.parametrize(("in_flight_a", "in_flight_b"), [(0, 0), (3, 1)])
def test_least_requests_share_follows_weights_at_equal_load(in_flight_a, in_flight_b):
    targets = endpoints(a=3, b=1)
    targets[0].in_flight, targets[1].in_flight = in_flight_a, in_flight_b
    got = shares(picks(LeastRequests(random.Random(3).random), targets, 10_000))
    assert got["a"] == pytest.approx(0.75, abs=0.015)


def test_least_requests_skips_zero_weights_and_handles_small_sets():
    balancer = LeastRequests(random.Random(4).random)
    assert set(picks(balancer, endpoints(a=0, b=1, c=1), 500)) == {"b", "c"}
    assert picks(balancer, endpoints(a=0, b=1), 5) == ["b"] * 5
    assert balancer.pick(endpoints(a=0, b=0), 0.0) is None
    assert balancer.pick(endpoints(a=0), 0.0) is None
    assert balancer.pick([], 0.0) is None


def test_least_requests_honours_slow_start():
    targets = [Target("old", 1), Target("new", 1, since=1000.0)]
    got = shares(picks(LeastRequests(random.Random(5).random, slow_start_s=60.0), targets, 10_000, now=1000.0))
    assert got["new"] == pytest.approx(0.1 / 1.1, abs=0.01)


def test_least_requests_peek_names_the_least_loaded_per_weight_without_drawing():
    balancer = LeastRequests(never)
    a, b, c = endpoints(a=1, b=4, c=2)
    a.in_flight, b.in_flight, c.in_flight = 1, 2, 1  # per weight: 1.0, 0.5, 0.5
    assert balancer.peek([a, c, b], 0.0) is b  # tie at 0.5: the heavier, though listed last
    b.in_flight = 3
    assert balancer.peek([a, b, c], 0.0) is c
    assert balancer.peek(endpoints(a=0), 0.0) is None


# --- Consistent hashing ------------------------------------------------------------------------------------------


def owners(targets: list[Target], balancer: ConsistentHash | None = None) -> list[str]:
    balancer = balancer or ConsistentHash()
    chosen = [balancer.pick(targets, 0.0, key) for key in KEYS]
    return [target.key for target in chosen if target is not None]


def moved(before: list[str], after: list[str]) -> list[int]:
    return [n for n, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]


def test_the_same_key_goes_to_the_same_endpoint_in_any_router():
    targets = endpoints(a=1, b=1, c=1)
    first = owners(targets)
    assert owners(targets) == first  # a fresh ring (a restarted router) agrees: the hashes are stable
    assert set(first) == {"a", "b", "c"}


def test_adding_an_endpoint_moves_about_a_quarter_of_the_keys_all_to_it():
    targets = endpoints(a=1, b=1, c=1)
    balancer = ConsistentHash()
    before = owners(targets, balancer)
    after = owners([*targets, Target("d", 1)], balancer)
    changed = moved(before, after)
    assert 0.15 < len(changed) / len(KEYS) < 0.35
    assert {after[n] for n in changed} == {"d"}


def test_removing_an_endpoint_moves_only_its_keys_and_they_come_back_with_it():
    targets = endpoints(a=1, b=1, c=1, d=1)
    balancer = ConsistentHash()
    before = owners(targets, balancer)
    without_b = owners([t for t in targets if t.key != "b"], balancer)
    assert {before[n] for n in moved(before, without_b)} == {"b"}
    assert {without_b[n] for n, owner in enumerate(before) if owner == "b"} == {"a", "c", "d"}  # spread out
    assert owners(targets, balancer) == before


class ReferenceRing:
    """The ring written out plainly: 100 points per weight, walk clockwise past the ineligible."""

    def __init__(self, targets: list[Target]) -> None:
        self.points = sorted(
            (int.from_bytes(hashlib.blake2b(f"{t.key}#{i}".encode(), digest_size=4).digest(), "big"), t.key)
            for t in targets
            for i in range(100 * t.weight)
        )

    def owner(self, key: bytes, eligible: set[str]) -> str:
        index = bisect_left(self.points, (zlib.crc32(key), ""))
        for step in range(len(self.points)):
            owner = self.points[(index + step) % len(self.points)][1]
            if owner in eligible:
                return owner
        raise AssertionError("no eligible owner")


def test_an_ineligible_owners_keys_go_to_the_next_eligible_owner_clockwise():
    targets = endpoints(a=1, b=2, c=1)
    reference = ReferenceRing(targets)
    assert any(zlib.crc32(key) > reference.points[-1][0] for key in KEYS)  # some keys wrap around past zero
    eligible = [targets[0], targets[2]]  # b ejected
    assert owners(targets) == [reference.owner(key, {"a", "b", "c"}) for key in KEYS]
    assert owners(eligible) == [reference.owner(key, {"a", "c"}) for key in KEYS]


def test_the_ring_is_rebuilt_only_when_the_eligible_set_or_a_weight_changes():
    # A rebuild makes a new ring list: its identity tells whether one happened (the router is compiled by mypyc,
    # so a patched method would not be seen by its callers).
    balancer, targets = ConsistentHash(), endpoints(a=1, b=1, idle=0)
    owners(targets, balancer)
    first = balancer._ring
    owners(targets, balancer)
    assert balancer._ring is first
    targets[0].weight = 2
    balancer.pick(targets, 0.0, b"k")
    second = balancer._ring
    assert second is not first
    targets.append(Target("c", 1))
    owners(targets, balancer)
    assert balancer._ring is not second
    third = balancer._ring
    owners(list(targets), balancer)  # an equal copy of the same set: no rebuild
    assert balancer._ring is third


def test_the_ring_forgets_endpoints_long_gone():
    balancer = ConsistentHash()
    for generation in range(100):  # replicas replaced again and again, each on a new port
        balancer.pick([Target(f"127.0.0.1:{9000 + generation}", 1), Target("static:80", 1)], 0.0, b"k")
    assert len(balancer._cache) <= 2 * 2 + 16 + 1  # a private cache, but its bound is the point: no leak


def test_hash_share_follows_weights():
    got = shares(owners(endpoints(a=2, b=1)))
    assert got["a"] == pytest.approx(2 / 3, abs=0.05)


def test_a_weight_change_rebuilds_the_ring():
    targets = endpoints(a=1, b=1)
    balancer = ConsistentHash()
    assert shares(owners(targets, balancer))["a"] == pytest.approx(0.5, abs=0.06)
    targets[0].weight = 3
    assert shares(owners(targets, balancer))["a"] == pytest.approx(0.75, abs=0.05)
    targets[0].weight = 0
    assert set(owners(targets, balancer)) == {"b"}
    targets[1].weight = 0
    assert balancer.pick(targets, 0.0, b"k") is None


def test_the_hash_balancer_returns_the_target_objects_it_was_given():
    balancer = ConsistentHash()
    balancer.pick(endpoints(a=1), 0.0, b"k")
    fresh = Target("a", 1)
    assert balancer.pick([fresh], 0.0, b"k") is fresh


def test_hashing_without_a_key_falls_back_to_round_robin_and_peek_has_no_effect():
    balancer, targets = ConsistentHash(), endpoints(a=5, b=1, c=1)
    assert balancer.peek(targets, 0.0, b"user-7") is balancer.pick(targets, 0.0, b"user-7")
    assert [t.current for t in targets] == [0.0, 0.0, 0.0]  # keyed picks leave round robin alone
    assert balancer.peek(targets, 0.0) is targets[0]
    assert picks(balancer, targets, 7) == list("aabacaa")


# --- The factory -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [("round_robin", SmoothWeightedRoundRobin), ("least_requests", LeastRequests), ("hash", ConsistentHash)],
)
def test_make_balancer_builds_each_by_name(name, kind):
    balancer = make_balancer(name, random.Random(6).random, slow_start_s=30.0)
    assert isinstance(balancer, kind)
    targets = endpoints(a=1, b=1)
    assert balancer.pick(targets, 0.0, None) in targets
    assert balancer.peek(targets, 0.0, b"k") in targets


def test_make_balancer_refuses_an_unknown_name_and_says_which():
    with pytest.raises(ValueError, match="'random'"):
        make_balancer(cast(BalancerName, "random"), random.random)
