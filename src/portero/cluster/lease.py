"""The leader lease, decided purely: the outcome of each Redis call and `now` in, the new lease and commands out.

Theory of operation: a follower tries to take the lease every `acquire_every_s`; the leader renews it every
`renew_every_s`. The leader counts its lease from the moment it *sent* the call that took or renewed it (the
TTL in Redis started no earlier), less a safety margin for clocks that run at slightly different rates. When
that moment passes without a renewal (Redis away, a slow network, a paused process) the leader stops acting on
its own, before any other portero can have taken the lease: the two never act at once, and the fencing token
catches the one case this cannot (a process paused *between* its check and its write). A renewal that finds
another holder ends leadership at once. Rejected: steady leadership while Redis is away (no one could tell it
from a partition, so a second leader could start next to it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    FOLLOWER = "follower"
    LEADER = "leader"


@dataclass(frozen=True)
class Timing:
    lease_s: float = 5.0
    renew_every_s: float = 1.5
    acquire_every_s: float = 0.5

    @property
    def margin_s(self) -> float:
        """Taken off the lease on the leader's side: clock rates differ, and its stop takes a moment."""
        return min(1.0, self.lease_s * 0.2)


@dataclass(frozen=True)
class Lease:
    role: Role = Role.FOLLOWER
    token: int | None = None  # fencing token of the current (or last) leadership of this portero
    valid_until: float = 0.0  # the leader's own deadline, on its monotonic clock
    next_try_at: float = 0.0
    holder: str | None = None  # the lease's value as last seen: who leads
    reachable: bool = True
    error: str = ""


# What a call to Redis found (past tense).
@dataclass(frozen=True)
class Acquired:
    token: int
    holder: str


@dataclass(frozen=True)
class Renewed:
    pass


@dataclass(frozen=True)
class HeldByOther:
    holder: str | None  # None: nobody holds it (it expired between two calls)


@dataclass(frozen=True)
class Unreachable:
    error: str


Outcome = Acquired | Renewed | HeldByOther | Unreachable


# What the shell must do (imperative).
@dataclass(frozen=True)
class Lead:
    token: int


@dataclass(frozen=True)
class Follow:
    reason: str


Command = Lead | Follow


def attempt(lease: Lease) -> Literal["acquire", "renew"]:
    return "renew" if lease.role is Role.LEADER else "acquire"


def settle(lease: Lease, outcome: Outcome, sent_at: float, now: float, timing: Timing) -> tuple[Lease, list[Command]]:
    """The lease after one call that was sent at `sent_at` and answered at `now`."""
    if isinstance(outcome, Unreachable):
        retry = now + min(timing.acquire_every_s, timing.renew_every_s)
        return dataclasses.replace(lease, reachable=False, error=outcome.error, next_try_at=retry), []
    lease = dataclasses.replace(lease, reachable=True, error="")
    if isinstance(outcome, Acquired):
        taken = Lease(
            Role.LEADER,
            outcome.token,
            sent_at + timing.lease_s - timing.margin_s,
            now + timing.renew_every_s,
            outcome.holder,
        )
        return taken, [Lead(outcome.token)] if lease.role is Role.FOLLOWER else []
    # A follower's next try: not before one it was told to wait for (see `demote`: a renewal sent before the step
    # down can be answered after it).
    retry_at = max(lease.next_try_at, now + timing.acquire_every_s)
    if isinstance(outcome, Renewed):
        if lease.role is not Role.LEADER:
            return dataclasses.replace(lease, next_try_at=retry_at), []
        valid_until = sent_at + timing.lease_s - timing.margin_s
        return dataclasses.replace(lease, valid_until=valid_until, next_try_at=now + timing.renew_every_s), []
    following = dataclasses.replace(
        lease,
        role=Role.FOLLOWER,
        holder=outcome.holder,
        next_try_at=now + timing.acquire_every_s if lease.role is Role.LEADER else retry_at,
    )
    if lease.role is Role.LEADER:
        return following, [Follow(f"the lease is held by {outcome.holder or 'nobody'} now")]
    return following, []


def expire(lease: Lease, now: float) -> tuple[Lease, list[Command]]:
    """A leader whose lease ran out without a renewal stops acting, whatever it believes about Redis."""
    if lease.role is Role.LEADER and now >= lease.valid_until:
        why = f"lease not renewed in time ({lease.error or 'no answer'})"
        return dataclasses.replace(lease, role=Role.FOLLOWER, holder=None), [Follow(why)]
    return lease, []


def demote(lease: Lease, reason: str, *, now: float, timing: Timing) -> tuple[Lease, list[Command]]:
    """Leadership ends from outside the lease (a fenced write refused, taking over failed, a step down). Fix: the
    portero that stepped down tries for the lease again only after a lease's time: it gave the lease back for the
    others, and its own next try (due within `renew_every_s`) took it back before them, so they waited for it to
    expire (CI: "timed out waiting for b to take over", 5 s)."""
    if lease.role is not Role.LEADER:
        return lease, []
    demoted = dataclasses.replace(lease, role=Role.FOLLOWER, holder=None, next_try_at=now + timing.lease_s)
    return demoted, [Follow(reason)]


def wake_at(lease: Lease) -> float:
    """When the shell must look again: the next call, or the leader's deadline if that comes first."""
    if lease.role is Role.LEADER:
        return min(lease.next_try_at, lease.valid_until)
    return lease.next_try_at
