"""Active health checks, HAProxy-style: `rise` passes in a row bring an endpoint up, `fall` failures take it down.

Only the verdict lives here; the data plane runs the probes (HTTP path, timeout) and feeds each result in.
A single failure among passes (or the reverse) restarts the count, so one flaky probe neither takes a healthy
endpoint out nor brings a broken one back.
"""

from __future__ import annotations


class ActiveHealth:
    __slots__ = ("failures", "fall", "healthy", "passes", "rise")

    def __init__(self, *, healthy: bool, rise: int = 2, fall: int = 3) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"health: rise and fall must be >= 1, got rise={rise}, fall={fall}")
        self.healthy = healthy  # a registered endpoint may start up (trusted) or down (prove it first)
        self.rise = rise
        self.fall = fall
        self.passes = 0  # consecutive successful checks
        self.failures = 0  # consecutive failed checks

    def down(self) -> None:
        """Taken down by a certain failure (a refused connection): `rise` passes bring it back."""
        self.healthy = False
        self.passes = self.failures = 0

    def observe(self, *, ok: bool) -> bool:
        """Count one check result; True when it changed `healthy`."""
        if ok:
            self.passes += 1
            self.failures = 0
            if not self.healthy and self.passes >= self.rise:
                self.healthy = True
                return True
        else:
            self.failures += 1
            self.passes = 0
            if self.healthy and self.failures >= self.fall:
                self.healthy = False
                return True
        return False


def next_check_at(last: float, interval_s: float, jitter: float = 0.0) -> float:
    """When to probe next. `jitter` (a fraction, e.g. `(rand() - 0.5) * 0.2` for ±10 %, HAProxy's spread-checks)
    keeps the probes of many endpoints from firing in lockstep."""
    return last + interval_s * max(1.0 + jitter, 0.0)
