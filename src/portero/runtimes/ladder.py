"""The stop ladder every runtime climbs, and the poll-until-deadline wait it is made of.

A stop sends the stop signal (SIGTERM, or the image's StopSignal), waits up to the replica's `stop_grace_s` for
the end, then sends SIGKILL and waits up to the runtime's kill wait (`process.kill_wait_s`,
`docker.kill_wait_s`): a replica still there after the last rung is a retryable failure. The rungs are data;
each runtime gives the two callables that differ (send a rung to a pid, a container or a Swarm service; read
whether it ended), and every rung is logged in the same form, "replica web-1: SIGTERM, waiting up to 30.0 s".
The clock and the sleep are parameters, so the ladder runs on a fake clock in the unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from portero.runtimes.base import RuntimeFailure

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Deadline:
    at: float  # on `clock`
    clock: Clock = time.monotonic

    @classmethod
    def within(cls, seconds: float, *, clock: Clock = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def left(self) -> float:
        return max(0.0, self.at - self.clock())


async def poll_until(
    deadline: Deadline, check: Callable[[], Awaitable[T | None]], interval: float, *, sleep: Sleep = asyncio.sleep
) -> T | None:
    """What `check` returns once it returns something, or None when the deadline passes first. It is checked at
    once and once more at the deadline itself (the last sleep is cut short), so a zero wait still looks once."""
    while True:
        found = await check()
        if found is not None:
            return found
        left = deadline.left()
        if left <= 0:
            return None
        await sleep(min(interval, left))


@dataclass(frozen=True)
class Rung:
    action: str  # what is sent: a signal's name, or how the end is asked for ("scale to 0")
    wait_s: float  # how long the end is waited for after it


def ladder(stop_signal: str, grace_s: float, kill_wait_s: float) -> tuple[Rung, ...]:
    return (Rung(stop_signal, grace_s), Rung("SIGKILL", kill_wait_s))


async def climb(
    replica_id: str,
    rungs: Sequence[Rung],
    send: Callable[[str], Awaitable[None]],
    ended: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    interval: float,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Send each rung and wait its time for `ended` to say how the replica ended; `what` names it in the failure
    raised when it outlives the last rung (e.g. "pid 4242")."""
    for step, rung in enumerate(rungs):
        level = logging.INFO if step == 0 else logging.WARNING  # an escalation: the replica outlived a rung
        log.log(
            level,
            "replica %s: %s, waiting up to %.1f s",
            replica_id,
            rung.action,
            rung.wait_s,
            extra={"replica": replica_id},
        )
        await send(rung.action)
        found = await poll_until(Deadline.within(rung.wait_s, clock=clock), ended, interval, sleep=sleep)
        if found is not None:
            return found
    last = rungs[-1]
    raise RuntimeFailure(
        f"replica {replica_id} ({what}) still there {last.wait_s:g} s after {last.action}", retryable=True
    )
