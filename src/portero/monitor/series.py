"""Metric series in memory, under a fixed budget: each series is two ring buffers of doubles.

Theory of operation: a ring holds one value per time bucket of `step_s` seconds; the slot of bucket `b` is
`b % slots`, so nothing but the newest bucket number is stored beside the values, and a bucket with no sample
holds NaN. A sample folds into the newest bucket (gauges: running mean; counters: the last value wins), and a
jump forward clears the skipped slots. Every series has a fine ring (1 s for an hour by default) and a coarse
one (1 min for a day), both fed from the same samples, so a query picks the finest ring that reaches back far
enough. Memory is decided up front: the budget divided by one series' measured size is the most series kept;
series not updated for the coarse retention (a gone replica's) are dropped, and under pressure the one
updated longest ago makes room. Rejected: keeping (time, value) pairs in deques (two objects per sample, and
memory follows the sample rate instead of the settings).

Pure: time comes in as `now`, nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter"]
Aggregate = Literal["last", "avg", "min", "max", "p50", "p95", "p99", "rate", "increase"]
NAN = math.nan
MAX_POINTS = 10_000  # a series query never returns more points than this: its step grows instead


@dataclass(frozen=True)
class Tier:
    step_s: float
    keep_s: float

    @property
    def slots(self) -> int:
        return max(1, math.ceil(self.keep_s / self.step_s))


class Ring:
    __slots__ = ("filled", "newest", "step_s", "values")

    def __init__(self, tier: Tier) -> None:
        self.step_s = tier.step_s
        self.values = array("d", [NAN]) * tier.slots
        self.newest = -1  # bucket number of the newest slot written; -1 before the first sample
        self.filled = 0  # samples folded into the newest bucket

    def add(self, at: float, value: float, kind: Kind) -> None:
        bucket = int(at // self.step_s)
        slots = len(self.values)
        if bucket > self.newest:
            first = max(self.newest + 1, bucket - slots + 1)
            for skipped in range(first, bucket):  # a gap: those buckets had no sample
                self.values[skipped % slots] = NAN
            self.newest, self.filled = bucket, 0
        # A sample older than the newest bucket (the wall clock stepped back) folds into the newest one.
        slot = self.newest % slots
        if self.filled == 0 or kind == "counter":
            self.values[slot] = value
        else:
            self.values[slot] += (value - self.values[slot]) / (self.filled + 1)
        self.filled += 1

    def points(self, start: float, end: float) -> Iterator[tuple[float, float]]:
        """(bucket start time, value) of the buckets that overlap [start, end], oldest first, NaN skipped."""
        if self.newest < 0:
            return
        slots = len(self.values)
        first = max(self.newest - slots + 1, math.floor(start / self.step_s))
        last = min(self.newest, math.floor(end / self.step_s))
        for bucket in range(first, last + 1):
            value = self.values[bucket % slots]
            if value == value:  # not NaN
                yield bucket * self.step_s, value

    def nbytes(self) -> int:
        return sys.getsizeof(self.values)


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """`name{a="1",b="2"}` with labels sorted: one spelling per series, Prometheus' own."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


SELECTOR = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(?:\{(?P<labels>.*)\})?$")
MATCHER = re.compile(r'\s*([a-z_][a-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_selector(text: str) -> tuple[str, dict[str, str]]:
    """`replica_cpu_percent{service="portal"}` -> ("replica_cpu_percent", {"service": "portal"})."""
    found = SELECTOR.match(text.strip())
    if found is None:
        raise ValueError(f'{text!r}: expected a series name such as replica_cpu_percent{{service="portal"}}')
    labels: dict[str, str] = {}
    rest = found["labels"] or ""
    position = 0
    while position < len(rest.rstrip()):
        matcher = MATCHER.match(rest, position)
        if matcher is None:
            raise ValueError(f'{text!r}: labels must be written name="value", separated by commas')
        labels[matcher[1]] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], matcher[2])
        position = matcher.end()
    return found["name"], labels


class Series:
    __slots__ = ("coarse", "fine", "key", "kind", "labels", "last", "name", "updated_at")

    def __init__(self, name: str, labels: Mapping[str, str], kind: Kind, fine: Tier, coarse: Tier) -> None:
        self.name = name
        self.labels = dict(labels)
        self.key = series_key(name, labels)
        self.kind: Kind = kind
        self.fine = Ring(fine)
        self.coarse = Ring(coarse)
        self.updated_at = -math.inf
        self.last = NAN

    def add(self, at: float, value: float) -> None:
        self.fine.add(at, value, self.kind)
        self.coarse.add(at, value, self.kind)
        self.updated_at = max(self.updated_at, at)
        self.last = value

    def nbytes(self) -> int:
        """What this series holds: its two buffers, the object, its key and labels (measured, not guessed)."""
        labels = sys.getsizeof(self.labels) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self.labels.items())
        return self.fine.nbytes() + self.coarse.nbytes() + sys.getsizeof(self) + sys.getsizeof(self.key) + labels


class SeriesStore:
    def __init__(self, fine: Tier, coarse: Tier, budget_bytes: int) -> None:
        self.fine = fine
        self.coarse = coarse
        self.budget_bytes = budget_bytes
        # A prototype with long labels sizes one series; dict slots for the index are counted on top.
        sample = Series("x" * 48, {"service": "x" * 31, "replica": "x" * 40}, "gauge", fine, coarse)
        self.series_bytes = sample.nbytes() + 2 * sys.getsizeof(sample.key) + 64
        self.max_series = max(1, budget_bytes // self.series_bytes)
        self.series: dict[str, Series] = {}
        self.by_name: dict[str, dict[str, Series]] = {}
        self.evicted = 0  # series dropped to make room (not those that aged out)
        self.refused = 0  # samples of new series refused: every series was current and the budget full

    def add(self, name: str, labels: Mapping[str, str], value: float, now: float, kind: Kind = "gauge") -> bool:
        """Record a sample; NaN (no value this time, e.g. a latency without requests) records nothing."""
        if value != value:
            return False
        key = series_key(name, labels)
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= self.max_series and not self._make_room(now):
                self.refused += 1
                return False
            series = Series(name, labels, kind, self.fine, self.coarse)
            self.series[key] = series
            self.by_name.setdefault(name, {})[key] = series
        series.add(now, value)
        return True

    def _make_room(self, now: float) -> bool:
        oldest = min(self.series.values(), key=lambda s: s.updated_at)
        if oldest.updated_at >= now - 2 * self.fine.step_s:
            return False  # every series is current: dropping one would only make it come back
        self._drop(oldest)
        self.evicted += 1
        return True

    def expire(self, now: float) -> int:
        """Drop the series nobody updated for the coarse retention: everything they held has aged out."""
        stale = [s for s in self.series.values() if s.updated_at < now - self.coarse.keep_s]
        for series in stale:
            self._drop(series)
        return len(stale)

    def _drop(self, series: Series) -> None:
        del self.series[series.key]
        siblings = self.by_name[series.name]
        del siblings[series.key]
        if not siblings:
            del self.by_name[series.name]

    def select(self, name: str, match: Mapping[str, str] | None = None) -> list[Series]:
        found = self.by_name.get(name, {}).values()
        if not match:
            return list(found)
        return [s for s in found if all(s.labels.get(k) == v for k, v in match.items())]

    def get(self, name: str, labels: Mapping[str, str]) -> Series | None:
        return self.series.get(series_key(name, labels))

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.series.values())

    # -- queries ---------------------------------------------------------------------------------------------------

    def ring_for(self, series: Series, start: float, now: float) -> Ring:
        """The fine ring when it reaches back to `start`, else the coarse one."""
        return series.fine if start >= now - self.fine.keep_s else series.coarse

    def points(self, series: Series, start: float, end: float, now: float) -> list[tuple[float, float]]:
        return list(self.ring_for(series, start, now).points(start, end))

    def aggregate(self, series: Series, how: Aggregate, window_s: float, now: float) -> float | None:
        """One value of the samples in the last `window_s` seconds; None when there are none (or too few)."""
        if how == "last":
            return None if series.last != series.last or series.updated_at < now - max(window_s, 0) else series.last
        points = self.points(series, now - window_s, now, now)
        if how == "rate":
            added = increase([v for _, v in points])
            span = points[-1][0] - points[0][0] if points else 0.0
            return added / span if added is not None and span > 0 else None
        return reduce([v for _, v in points], how)

    def downsample(
        self, series: Series, start: float, end: float, step_s: float, now: float
    ) -> tuple[float, list[tuple[float, float]]]:
        """Points from `start` to `end` every `step_s` (at least the ring's step; fewer than MAX_POINTS)."""
        ring = self.ring_for(series, start, now)
        step = max(step_s, ring.step_s, (end - start) / MAX_POINTS)
        buckets: dict[int, list[float]] = {}
        for at, value in ring.points(start, end):
            buckets.setdefault(max(int((at - start) // step), 0), []).append(value)  # a bucket begun before start
        how: Aggregate = "last" if series.kind == "counter" else "avg"
        out = [(start + index * step, reduce(values, how)) for index, values in sorted(buckets.items())]
        return step, [(at, value) for at, value in out if value is not None]


def reduce(values: list[float], how: Aggregate) -> float | None:
    if not values:
        return None
    if how in ("last", "avg", "min", "max"):
        return {"last": values[-1], "avg": math.fsum(values) / len(values), "min": min(values), "max": max(values)}[how]
    if how in ("p50", "p95", "p99"):
        return percentile(sorted(values), float(how[1:]))
    if how == "increase":
        return increase(values)
    raise ValueError(f"aggregate {how!r} needs the samples' times (SeriesStore.aggregate)")


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def increase(values: list[float]) -> float | None:
    """What a counter added over its samples; a drop is a reset (the counter restarted from zero)."""
    if len(values) < 2:
        return None
    total = 0.0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total
