"""Which endpoint gets the next request: smooth weighted round robin, least requests, consistent hashing.

Theory of operation: every balancer is handed, per request, the endpoints that are eligible right now (healthy, not
ejected, not draining) and `now`. It returns one of them, or None when none has a positive weight. The state a
balancer needs between calls lives on the `Target` (SWRR's running weight, the in-flight count) or in the balancer
(the hash ring), never in a clock or a task, so the set of endpoints may change freely between two calls.

`pick` takes a turn; `peek` answers "which endpoint would the next request go to" (the registry's `next-server`)
and changes nothing.

Slow start: an endpoint that has just become eligible (`Target.since`) is balanced with a weight that ramps linearly
from 10 % of its configured weight to all of it over `slow_start_s`, as Envoy's and HAProxy's slow start do, so a
cold replica is not handed its full share at once. Round robin and least requests honour it; hashing does not, since
moving sticky sessions back and forth while a weight ramps would break the stickiness it exists for.
"""

from __future__ import annotations

import hashlib
import operator
import zlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Final, Literal, Protocol

from portero.router.target import Target

# Where the ramp starts, as a share of the configured weight (Envoy's min_weight_percent). Never 0: with integer
# weights the ramp starts at 0.1 or more, so an endpoint in slow start always gets some traffic.
SLOW_START_FRACTION: Final = 0.1
VNODES_PER_WEIGHT: Final = 100  # ring points per unit of weight: ~±10 % key share per endpoint at weight 1
MAX_RING_POINTS: Final = 10_000  # beyond this the points per weight shrink, so a rebuild stays within a few ms
_INDEX_BITS: Final = 16  # a ring entry is (point hash << 16) | member index: one sorted list of ints, bisected
_INDEX_MASK: Final = (1 << _INDEX_BITS) - 1
_NO_CURRENT: Final = float("-inf")  # below any running weight: the first eligible endpoint always leads at first
_NEVER: Final = float("inf")
_weight_of = operator.attrgetter("weight")


class Balancer(Protocol):
    def pick(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None: ...

    def peek(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None: ...


BalancerName = Literal["round_robin", "least_requests", "hash"]


def make_balancer(name: BalancerName, rand: Callable[[], float], slow_start_s: float = 0.0) -> Balancer:
    """`rand` returns floats in [0, 1), e.g. `random.Random().random`; only least requests draws from it."""
    if name == "round_robin":
        return SmoothWeightedRoundRobin(slow_start_s)
    if name == "least_requests":
        return LeastRequests(rand, slow_start_s)
    if name == "hash":
        return ConsistentHash(slow_start_s)
    raise ValueError(f"balancer: unknown name {name!r}; expected 'round_robin', 'least_requests' or 'hash'")


def effective_weight(target: Target, now: float, slow_start_s: float) -> float:
    weight = target.weight
    if weight <= 0:
        return 0.0
    elapsed = now - target.since
    if slow_start_s <= 0.0 or elapsed >= slow_start_s:
        return float(weight)
    return _ramp(weight, elapsed, slow_start_s)


def _ramp(weight: float, elapsed: float, slow_start_s: float) -> float:
    """The weight `elapsed` seconds into slow start; the hot loops call it only for endpoints still ramping."""
    if elapsed <= 0.0:  # `since` in the future (set by another clock): the start of the ramp
        return weight * SLOW_START_FRACTION
    return weight * (SLOW_START_FRACTION + (1.0 - SLOW_START_FRACTION) * elapsed / slow_start_s)


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin: weights 5:1:1 give a a b a c a a, not a a a a a b c.

    Each pick adds every endpoint's weight to its running `current`, takes the largest (the first one on a tie,
    so the order is deterministic) and takes the total off the winner. An endpoint that joins starts at 0 and is
    interleaved at once; one that leaves takes its `current` with it, which is bounded by the total weight.
    """

    __slots__ = ("slow_start_s",)

    def __init__(self, slow_start_s: float = 0.0) -> None:
        self.slow_start_s = slow_start_s

    def pick(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None:
        slow = self.slow_start_s
        ramping_after = now - slow if slow > 0 else _NEVER  # one comparison per endpoint when none is ramping
        best: Target | None = None
        best_current = _NO_CURRENT
        total = 0.0
        for target in targets:
            weight = float(target.weight)
            if weight > 0:
                if target.since > ramping_after:
                    weight = _ramp(weight, now - target.since, slow)
                total += weight
                target.current = current = target.current + weight
                if current > best_current:
                    best = target
                    best_current = current
        if best is not None:
            best.current = best_current - total
        return best

    def peek(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None:
        slow = self.slow_start_s
        ramping_after = now - slow if slow > 0 else _NEVER
        best: Target | None = None
        best_current = _NO_CURRENT
        for target in targets:
            weight = float(target.weight)
            if weight > 0:
                if target.since > ramping_after:
                    weight = _ramp(weight, now - target.since, slow)
                current = target.current + weight
                if current > best_current:
                    best = target
                    best_current = current
        return best


class LeastRequests:
    """Power of two choices: draw two distinct endpoints, send to the one with fewer requests in flight per weight.

    Two random candidates rather than a scan for the global minimum: the minimum is where every request lands in
    the same instant, before any in-flight count moves (herding); two choices keep most of the benefit without it.
    A tie (typical when idle, every count at 0) is settled by a coin weighted by the two weights, so weights 3:1
    give a 3:1 share even without load. With three or more endpoints of unequal weights and no load the share is
    only close to the weights (candidates are drawn uniformly); use round robin where exact shares matter.

    `peek` draws nothing: it names the endpoint with the lowest in-flight per weight (ties: the heavier, then the
    first), the one a random pick is most likely to choose.
    """

    __slots__ = ("rand", "slow_start_s")

    def __init__(self, rand: Callable[[], float], slow_start_s: float = 0.0) -> None:
        self.rand = rand
        self.slow_start_s = slow_start_s

    def pick(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None:
        count = len(targets)
        if count < 2:
            return targets[0] if count and targets[0].weight > 0 else None
        rand = self.rand
        first = int(rand() * count)
        second = int(rand() * (count - 1))
        second += second >= first  # distinct, and still uniform
        a, b = targets[first], targets[second]
        if a.weight <= 0 or b.weight <= 0:  # rare (a weight set to 0): draw again among the eligible only
            return self.pick([target for target in targets if target.weight > 0], now)
        return self._duel(a, b, now)

    def _duel(self, a: Target, b: Target, now: float) -> Target:
        slow = self.slow_start_s
        weight_a = float(a.weight)
        weight_b = float(b.weight)
        if slow:
            if now - a.since < slow:
                weight_a = _ramp(weight_a, now - a.since, slow)
            if now - b.since < slow:
                weight_b = _ramp(weight_b, now - b.since, slow)
        load_a, load_b = a.in_flight * weight_b, b.in_flight * weight_a  # in_flight / weight, without dividing
        if load_a != load_b:
            return a if load_a < load_b else b
        return a if self.rand() * (weight_a + weight_b) < weight_a else b

    def peek(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None:
        slow = self.slow_start_s
        best: Target | None = None
        best_load = best_weight = 0.0
        for target in targets:
            weight = effective_weight(target, now, slow)
            if weight <= 0:
                continue
            load = target.in_flight / weight
            if best is None or load < best_load or (load == best_load and weight > best_weight):
                best, best_load, best_weight = target, load, weight
        return best


class ConsistentHash:
    """A hash ring for sticky sessions: the same key goes to the same endpoint while that endpoint is eligible.

    Each endpoint owns `VNODES_PER_WEIGHT × weight` points, placed by a stable hash of "key#i" (blake2b, so the
    ring is the same in every process and after every restart). A request key is hashed with crc32, ~4x faster
    than blake2b and measured as even on the ring (sequential ids, UUIDs, IP addresses), and is served by the owner
    of the first point clockwise.

    The ring is built from the eligible endpoints passed in, and rebuilt only when that set (or a weight) changes.
    An endpoint's points depend on its own key and weight only, so dropping one hands each of its keys to the owner
    of the next point clockwise, exactly the walk past an ineligible owner, while every other key stays put; when
    it returns, its keys come back. Rejected: keeping ejected endpoints on the ring and walking past them, which
    gives the same answer but tests eligibility on every request, where a rebuild costs at most a few ms per
    membership change (each endpoint's points are cached, so a rebuild is mostly one merge; see
    scripts/bench_decisions.py).

    Without a key (no such header or cookie), requests are spread by smooth weighted round robin.
    """

    __slots__ = ("_cache", "_given", "_given_weights", "_members", "_ring", "fallback")

    def __init__(self, slow_start_s: float = 0.0) -> None:
        self.fallback = SmoothWeightedRoundRobin(slow_start_s)
        self._given: Sequence[Target] = []  # a copy of the sequence of the last build, and its weights: the signature
        self._given_weights: list[int] = []
        self._members: list[Target] = []  # those with a positive weight, sorted by key: a ring entry's index
        self._ring: list[int] = []
        self._cache: dict[tuple[str, int], list[int]] = {}  # (key, points) -> that endpoint's shifted ring points

    def pick(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None:
        if key is None:
            return self.fallback.pick(targets, now)
        # Compared at C speed (identity first, then the weights), as this runs on every hashed request. A list or a
        # tuple compares equal to its copy; another kind of sequence would rebuild every time.
        if targets != self._given or list(map(_weight_of, targets)) != self._given_weights:
            self._build(targets)
        ring = self._ring
        if not ring:
            return None
        index = bisect_left(ring, zlib.crc32(key) << _INDEX_BITS)
        entry = ring[index] if index < len(ring) else ring[0]  # past the last point: wrap around
        return self._members[entry & _INDEX_MASK]

    def peek(self, targets: Sequence[Target], now: float, key: bytes | None = None) -> Target | None:
        if key is None:
            return self.fallback.peek(targets, now)
        return self.pick(targets, now, key)  # a keyed pick changes nothing but the ring cache

    def _build(self, targets: Sequence[Target]) -> None:
        self._given = targets[:]
        self._given_weights = list(map(_weight_of, targets))
        self._members = sorted((target for target in targets if target.weight > 0), key=_by_key)
        if len(self._members) >= 1 << _INDEX_BITS:
            raise ValueError(f"hash balancer: {len(self._members)} endpoints, at most {(1 << _INDEX_BITS) - 1}")
        total = sum(target.weight for target in self._members)
        per_weight = min(float(VNODES_PER_WEIGHT), MAX_RING_POINTS / max(total, 1))
        ring: list[int] = []
        for index, target in enumerate(self._members):
            points = self._points(target.key, max(1, round(per_weight * target.weight)))
            ring.extend(map(operator.or_, points, repeat(index)))
        ring.sort()  # the cached runs are sorted already: Timsort merges them
        self._ring = ring
        if len(self._cache) > 2 * len(self._members) + 16:  # forget endpoints long gone, keep recent flappers
            keep = {target.key for target in self._members}
            self._cache = {entry: points for entry, points in self._cache.items() if entry[0] in keep}

    def _points(self, key: str, count: int) -> list[int]:
        """An endpoint's ring points, already shifted; cached, as hashing them is most of a rebuild's cost."""
        points = self._cache.get((key, count))
        if points is None:
            points = sorted(
                int.from_bytes(hashlib.blake2b(f"{key}#{i}".encode(), digest_size=4).digest(), "big") << _INDEX_BITS
                for i in range(count)
            )
            self._cache[(key, count)] = points
        return points


def _by_key(target: Target) -> str:
    return target.key
