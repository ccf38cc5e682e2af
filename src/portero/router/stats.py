"""Metrics cheap enough to update on every request: fixed-bucket latency histograms and plain counters.

A histogram is a list of counts over fixed upper bounds (Prometheus-style, `le`: a value equal to a bound counts
in that bound's bucket), so observing is a short scan and three additions, and histograms of endpoints merge into
one for their service by adding lists. Percentiles are estimated by linear interpolation inside the bucket that
holds them, so they are exact to within that bucket's width. Rejected: keeping samples (memory grows with
traffic) and streaming sketches (costlier per request than this needs).
"""

from __future__ import annotations

from typing import Final, TypedDict

# Upper bounds in seconds; one more bucket counts everything above the last (+Inf). They reach past the longest
# default wait (60 s to the first response byte, 60 s without progress) so that a client that waited a minute shows
# as a minute, not as "more than 10 s".
BOUNDS_S: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600
)  # fmt: skip

STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")

# What went wrong with a try at an endpoint, by index into `Counters.faults`; each counts against that endpoint.
REFUSED: Final = 0  # the connection could not be opened (refused, unreachable): nothing reached the app
CONNECT_TIMEOUT: Final = 1  # the connection did not open within connect_timeout_s: nothing reached the app
RESET: Final = 2  # the connection was lost before the response was complete
TIMEOUT: Final = 3  # no response head within response_timeout_s after the request
STALLED: Final = 4  # the endpoint neither sent nor read a byte for stall_timeout_s in the middle of an exchange
BAD_RESPONSE: Final = 5  # not HTTP/1.x as the router can forward it: unparsable, a head too large, an unknown coding
FAULTS: Final = ("refused", "connect_timeout", "reset", "timeout", "stalled", "bad_response")


def bucket_of(seconds: float) -> int:
    """The index of the bucket `seconds` counts in (`bisect_left` over BOUNDS_S). A scan from the smallest bound:
    most answers take milliseconds and stop it within four steps, where calling `bisect` from compiled code costs a
    module lookup and a Python call on every request."""
    index = 0
    for bound in BOUNDS_S:
        if seconds <= bound:
            return index
        index += 1
    return index


class HistogramSnapshot(TypedDict):
    bounds_s: list[float]
    counts: list[int]  # one more than bounds_s: the last counts everything above the last bound
    count: int
    sum_s: float
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


class CountersSnapshot(TypedDict):
    requests: int
    responses: dict[str, int]  # "1xx" .. "5xx"
    faults: dict[str, int]  # FAULTS
    retries: int
    ejections: int
    in_flight: int


class LatencyHistogram:
    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS_S) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bucket_of(seconds)] += 1
        self.sum += seconds
        self.count += 1

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (q from 0 to 100, so 99 is p99) in seconds; None when nothing was observed.

        Values above the last bound are reported as that bound, as Prometheus does: the histogram cannot tell
        how far above it they were.
        """
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile: q must be 0..100, got {q}")
        if not self.count:
            return None
        rank = q / 100.0 * self.count
        below = 0
        for index, in_bucket in enumerate(self.counts):
            if in_bucket and below + in_bucket >= rank:
                if index == len(BOUNDS_S):
                    return float(BOUNDS_S[-1])
                lower = BOUNDS_S[index - 1] if index else 0.0
                return lower + (BOUNDS_S[index] - lower) * (rank - below) / in_bucket
            below += in_bucket
        return float(BOUNDS_S[-1])  # not reached: the last non-empty bucket always holds rank <= count

    def merge(self, other: LatencyHistogram) -> None:
        """Add `other`'s observations to this one (an endpoint's into its service's, say)."""
        counts = self.counts
        for index, in_bucket in enumerate(other.counts):
            counts[index] += in_bucket
        self.sum += other.sum
        self.count += other.count

    def snapshot(self) -> HistogramSnapshot:
        """Plain data (JSON-ready) for the API and the monitor, detached from later observations."""
        return {
            "bounds_s": list(BOUNDS_S),
            "counts": list(self.counts),
            "count": self.count,
            "sum_s": self.sum,
            "p50_s": self.percentile(50),
            "p95_s": self.percentile(95),
            "p99_s": self.percentile(99),
        }


class Counters:
    """An endpoint's: tries sent to it (`requests`), its answers by class, its faults by kind (FAULTS), the tries
    retried elsewhere after failing here, its ejections. A service's: the answers its clients got (whoever made
    them), those the router made itself (`own`), and the requests whose clients left before the answer."""

    __slots__ = ("aborted", "ejections", "faults", "in_flight", "own", "requests", "responses", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0]  # by status class, 1xx to 5xx
        self.faults = [0] * len(FAULTS)
        self.retries = 0
        self.ejections = 0
        self.in_flight = 0
        self.own = 0
        self.aborted = 0

    def record_status(self, code: int) -> None:
        """Codes outside 100..599 (an upstream that sent garbage) count as 5xx: the client got a server error."""
        index = code // 100 - 1
        self.responses[index if 0 <= index < 5 else 4] += 1

    def as_dict(self) -> CountersSnapshot:
        return {
            "requests": self.requests,
            "responses": dict(zip(STATUS_CLASSES, self.responses, strict=True)),
            "faults": dict(zip(FAULTS, self.faults, strict=True)),
            "retries": self.retries,
            "ejections": self.ejections,
            "in_flight": self.in_flight,
        }
