"""The stop ladder and the deadline wait, on a fake clock: what is sent when, how long each rung waits, what is
logged, and what a replica that outlives every rung gets."""

from __future__ import annotations

import asyncio
import logging

import pytest

from portero.runtimes import ladder
from portero.runtimes.base import RuntimeFailure


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Replica:
    """Ends `ends_after_s` after it receives `ends_on` (never when None); records what it was sent, and when."""

    def __init__(self, clock: FakeClock, ends_on: str | None, ends_after_s: float = 0.0) -> None:
        self.clock = clock
        self.ends_on = ends_on
        self.ends_after_s = ends_after_s
        self.sent: list[tuple[float, str]] = []
        self.ends_at: float | None = None

    async def send(self, action: str) -> None:
        self.sent.append((self.clock.now, action))
        if action == self.ends_on:
            self.ends_at = self.clock.now + self.ends_after_s

    async def ended(self) -> str | None:
        if self.ends_at is not None and self.clock.now >= self.ends_at:
            return f"ended at {self.clock.now - 100:g}"
        return None


def climb(clock: FakeClock, replica: Replica, rungs: tuple[ladder.Rung, ...]) -> str:
    return asyncio.run(
        ladder.climb(
            "web-1",
            rungs,
            replica.send,
            replica.ended,
            what="pid 4242",
            interval=0.5,
            clock=clock,
            sleep=clock.sleep,
        )
    )


def test_the_ladder_is_the_stop_signal_the_grace_then_sigkill_and_the_kill_wait() -> None:
    assert ladder.ladder("SIGQUIT", 30.0, 5.0) == (ladder.Rung("SIGQUIT", 30.0), ladder.Rung("SIGKILL", 5.0))


def test_a_replica_that_ends_within_its_grace_never_gets_sigkill(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    replica = Replica(clock, ends_on="SIGTERM", ends_after_s=2.2)
    with caplog.at_level(logging.INFO, logger="portero.runtimes.ladder"):
        assert climb(clock, replica, ladder.ladder("SIGTERM", 30.0, 5.0)) == "ended at 2.5"
    assert replica.sent == [(100.0, "SIGTERM")]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "replica web-1: SIGTERM, waiting up to 30.0 s")
    ]
    assert caplog.records[0].replica == "web-1"  # type: ignore[attr-defined]


def test_a_replica_that_outlives_its_grace_gets_sigkill_at_the_grace_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    replica = Replica(clock, ends_on="SIGKILL", ends_after_s=1.0)
    with caplog.at_level(logging.INFO, logger="portero.runtimes.ladder"):
        assert climb(clock, replica, ladder.ladder("SIGTERM", 3.25, 5.0)) == "ended at 4.25"
    assert replica.sent == [(100.0, "SIGTERM"), (103.25, "SIGKILL")]  # the last sleep is cut to the deadline
    assert max(clock.slept) <= 0.5
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "replica web-1: SIGTERM, waiting up to 3.2 s"),
        ("WARNING", "replica web-1: SIGKILL, waiting up to 5.0 s"),
    ]


def test_a_replica_that_outlives_every_rung_is_a_retryable_failure_after_the_kill_wait() -> None:
    clock = FakeClock()
    replica = Replica(clock, ends_on=None)
    with pytest.raises(RuntimeFailure) as raised:
        climb(clock, replica, ladder.ladder("SIGTERM", 10.0, 5.0))
    assert str(raised.value) == "replica web-1 (pid 4242) still there 5 s after SIGKILL"
    assert raised.value.retryable
    assert replica.sent == [(100.0, "SIGTERM"), (110.0, "SIGKILL")]
    assert clock.now == 115.0  # both waits in full, not a poll interval more


def test_a_rung_of_zero_seconds_still_looks_once() -> None:
    clock = FakeClock()
    replica = Replica(clock, ends_on="scale to 0")
    assert climb(clock, replica, (ladder.Rung("scale to 0", 0.0),)) == "ended at 0"
    assert clock.slept == []


def test_poll_until_returns_the_first_answer_or_none_at_the_deadline() -> None:
    clock = FakeClock()
    answers = iter([None, None, "ready"])

    async def check() -> str | None:
        return next(answers)

    deadline = ladder.Deadline.within(10.0, clock=clock)
    assert asyncio.run(ladder.poll_until(deadline, check, 1.5, sleep=clock.sleep)) == "ready"
    assert clock.slept == [1.5, 1.5]

    checks: list[float] = []

    async def never() -> str | None:
        checks.append(clock.now)
        return None

    deadline = ladder.Deadline.within(2.0, clock=clock)
    assert asyncio.run(ladder.poll_until(deadline, never, 0.75, sleep=clock.sleep)) is None
    assert checks == [103.0, 103.75, 104.5, 105.0]  # at once, every interval, and at the deadline itself
    assert deadline.left() == 0.0
