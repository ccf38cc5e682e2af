"""The supervisor's decisions, pure: replicas + what was observed + desired state + now -> new replicas + actions.

Level-triggered: every pass looks at the whole picture again, so a missed event or a crash of portero is healed
by the next pass. The shell in `loop.py` gathers observations and carries out the actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from portero.events import Event as LogEvent
from portero.health.verdict import overdue, record_check
from portero.replicas import Event, Exit, Process, Replica, ReplicaState, StopIntent
from portero.spec.models import HealthCheck, RestartPolicy


@dataclass(frozen=True)
class Desired:
    service: str
    revision: int
    replicas: int
    health: HealthCheck = field(default_factory=HealthCheck)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace_s: float = 10.0
    # Other revisions held at a size while a deployment moves traffic (blue-green's old group, a canary's
    # baseline); revisions neither here nor `revision` leave as `revision` becomes ready.
    held: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Observed:
    exits: dict[str, Exit] = field(default_factory=dict)  # replicas whose process has ended
    checks: dict[str, bool] = field(default_factory=dict)  # health check results since the last pass


@dataclass(frozen=True)
class Start:
    replica: Replica


@dataclass(frozen=True)
class Stop:
    replica: Replica
    grace_s: float


@dataclass(frozen=True)
class Forget:
    replica_id: str


Action = Start | Stop | Forget


@dataclass
class Plan:
    replicas: list[Replica]
    actions: list[Action] = field(default_factory=list)
    events: list[LogEvent] = field(default_factory=list)

    def note(self, kind: str, replica: Replica, message: str, now: float, **data: object) -> None:
        self.events.append(LogEvent(kind, replica.id, message, replica.service, now, dict(data)))


DEFAULT_GRACE_S = 10.0  # for replicas whose service left the spec, with its settings

CANNOT_RUN = {126: " (not executable)", 127: " (command not found)"}

PROBED = frozenset({ReplicaState.STARTING, ReplicaState.READY, ReplicaState.UNHEALTHY})

# Which replica goes first when there are too many: those doing the least for the service.
RETIRE_ORDER = {
    ReplicaState.STOPPED: 0,
    ReplicaState.BACKOFF: 1,
    ReplicaState.PENDING: 2,
    ReplicaState.STARTING: 3,
    ReplicaState.UNHEALTHY: 4,
    ReplicaState.STOPPING: 5,
    ReplicaState.READY: 6,
}


def reconcile(
    replicas: Iterable[Replica],
    observed: Observed,
    desired: Mapping[str, Desired],
    now: float,
    new_id: Callable[[str, int], str],
) -> Plan:
    plan = Plan([])
    for replica in replicas:
        kept = _observe(replica, observed, desired.get(replica.service), now, plan)
        if kept is not None:
            plan.replicas.append(kept)
    for want in desired.values():
        _scale(want, now, new_id, plan)
    for replica in list(plan.replicas):
        if replica.service not in desired:
            _retire(replica, "its service was removed from the spec", now, plan)
    plan.replicas = [_start_if_pending(r, plan) for r in plan.replicas]
    return plan


def _observe(replica: Replica, observed: Observed, want: Desired | None, now: float, plan: Plan) -> Replica | None:
    exit_ = observed.exits.get(replica.id)
    if exit_ is not None and replica.running:
        return _exited(replica, exit_, want, now, plan)
    if replica.state is ReplicaState.BACKOFF and now >= replica.next_start_at:
        return replica.transition(Event.BACKOFF_ELAPSED)
    if want is None or not replica.running or replica.state is ReplicaState.STOPPING:
        return replica
    ok = observed.checks.get(replica.id)
    if ok is None:
        event = overdue(replica, want.health, now)
    else:
        replica, event = record_check(replica, want.health, now, ok=ok)
    if event is Event.PASSED_CHECKS:
        waited = now - (replica.started_at or now)
        was = replica.state
        replica = replica.transition(event, ready_at=now, unhealthy_since=None, last_error=None, final_error=False)
        message = (
            f"passed its health check {waited:.1f} s after start" if was is ReplicaState.STARTING else "healthy again"
        )
        plan.note("replica.ready", replica, message, now, waited_s=round(waited, 3))
    elif event is Event.FAILED_CHECKS and replica.state is ReplicaState.READY:
        replica = replica.transition(event, unhealthy_since=now)
        plan.note("replica.unhealthy", replica, f"failed {replica.failures} health checks in a row", now)
    elif event is Event.FAILED_CHECKS:
        why = "never passed its health check" if replica.state is ReplicaState.STARTING else "stayed unhealthy"
        replica = replica.transition(
            event, stop_intent=StopIntent.RESTART, last_error=f"{why} (GET {want.health.path})"
        )
        plan.actions.append(Stop(replica, want.stop_grace_s))
        plan.note("replica.recycled", replica, f"{why}: restarting it", now)
    return replica


def _exited(replica: Replica, exit_: Exit, want: Desired | None, now: float, plan: Plan) -> Replica | None:
    ran = now - (replica.started_at or now)
    if replica.state is ReplicaState.STOPPING:
        if replica.stop_intent is StopIntent.RETIRE or want is None:
            plan.actions.append(Forget(replica.id))
            plan.note("replica.removed", replica, f"stopped and removed ({exit_.describe()})", now)
            return None
        if replica.stop_intent is StopIntent.RESTART and want is not None:
            return _backoff(replica, Event.RECYCLED, exit_.describe(), ran, want.restart, now, plan)
        plan.note("replica.stopped", replica, f"stopped ({exit_.describe()})", now)
        return replica.transition(Event.EXITED, process=None, stop_intent=None, last_exit_code=exit_.code)
    if want is None:
        plan.actions.append(Forget(replica.id))
        return None
    why = f"{exit_.describe()} after {ran:.1f} s"
    # The shell's codes for a command that cannot run: it will not run better the next time.
    final = exit_.code in CANNOT_RUN and exit_.signal is None
    replica = dataclasses.replace(replica, last_error=why + CANNOT_RUN.get(exit_.code, ""), final_error=final)
    return _backoff(replica, Event.EXITED, why, ran, want.restart, now, plan)


def _backoff(
    replica: Replica, event: Event, why: str, ran: float, policy: RestartPolicy, now: float, plan: Plan
) -> Replica:
    """CrashLoopBackOff: the first delay is `initial_backoff_s`, doubling up to the cap; a long run resets it."""
    if replica.backoff_s == 0 or ran >= policy.reset_after_s:
        delay = policy.initial_backoff_s
    else:
        delay = min(replica.backoff_s * 2, policy.max_backoff_s)
    restarts = replica.restarts + 1
    plan.note(
        "replica.restarting",
        replica,
        f"{why}; restart #{restarts} in {delay:g} s",
        now,
        restarts=restarts,
        delay_s=delay,
    )
    return replica.transition(
        event,
        process=None,
        stop_intent=None,
        restarts=restarts,
        backoff_s=delay,
        next_start_at=now + delay,
        passes=0,
        failures=0,
    )


def _scale(want: Desired, now: float, new_id: Callable[[str, int], str], plan: Plan) -> None:
    mine = [r for r in plan.replicas if r.service == want.service and r.stop_intent is not StopIntent.RETIRE]
    current = _scale_group(want, want.revision, want.replicas, mine, now, new_id, plan)
    for revision, count in want.held:
        _scale_group(want, revision, count, mine, now, new_id, plan)
    # Other revisions leave only as the new one becomes ready: capacity never dips during a change.
    ready = sum(1 for r in current if r.state is ReplicaState.READY)
    held = {revision for revision, _ in want.held}
    old = sorted((r for r in mine if r.revision != want.revision and r.revision not in held), key=_retire_rank)
    keep = max(0, want.replicas - ready)
    for replica in old[: max(0, len(old) - keep)]:
        _retire(replica, f"revision {want.revision} of {want.service} is ready", now, plan, want.stop_grace_s)


def _scale_group(
    want: Desired,
    revision: int,
    count: int,
    mine: list[Replica],
    now: float,
    new_id: Callable[[str, int], str],
    plan: Plan,
) -> list[Replica]:
    """Bring the replicas of one revision to `count`; returns those that stay."""
    current = [r for r in mine if r.revision == revision]
    missing = count - len(current)
    for _ in range(missing):
        replica = Replica(new_id(want.service, revision), want.service, revision, created_at=now)
        plan.replicas.append(replica)
        current.append(replica)
        plan.note("replica.created", replica, f"scaling revision {revision} of {want.service} to {count}", now)
    if missing < 0:
        excess = sorted(current, key=_retire_rank)[:-missing]
        for replica in excess:
            why = f"scaling revision {revision} of {want.service} down to {count}"
            _retire(replica, why, now, plan, want.stop_grace_s)
        current = [r for r in current if r not in excess]
    return current


def _retire_rank(replica: Replica) -> tuple[int, float]:
    return RETIRE_ORDER[replica.state], -replica.created_at


def _retire(replica: Replica, why: str, now: float, plan: Plan, grace_s: float = DEFAULT_GRACE_S) -> None:
    index = next(i for i, r in enumerate(plan.replicas) if r.id == replica.id)
    if replica.state is ReplicaState.STOPPING:
        plan.replicas[index] = dataclasses.replace(replica, stop_intent=StopIntent.RETIRE)
    elif replica.running:
        stopping = replica.transition(Event.STOP_REQUESTED, stop_intent=StopIntent.RETIRE)
        plan.replicas[index] = stopping
        plan.actions.append(Stop(stopping, grace_s))
        plan.note("replica.retiring", replica, why, now)
    else:
        del plan.replicas[index]
        plan.actions.append(Forget(replica.id))
        plan.note("replica.removed", replica, why, now)


def _start_if_pending(replica: Replica, plan: Plan) -> Replica:
    if replica.state is ReplicaState.PENDING:
        plan.actions.append(Start(replica))
    return replica


def hold(replica: Replica, grace_s: float) -> tuple[Replica, list[Action]]:
    """The operator stops a replica: it keeps its slot and is not restarted until started again."""
    if replica.state is ReplicaState.STOPPING:
        return dataclasses.replace(replica, stop_intent=StopIntent.HOLD), []
    stopped = replica.transition(Event.STOP_REQUESTED, stop_intent=StopIntent.HOLD)
    return stopped, [Stop(stopped, grace_s)] if replica.running else []


def release(replica: Replica) -> Replica:
    """The operator starts a held replica again, with a fresh backoff."""
    if replica.state is ReplicaState.STOPPING:
        return dataclasses.replace(replica, stop_intent=StopIntent.RESTART)
    return replica.transition(Event.START_REQUESTED, backoff_s=0.0, next_start_at=0.0)


def started(replica: Replica, process: Process, now: float) -> Replica:
    return replica.transition(
        Event.STARTED, process=process, started_at=now, ready_at=None, passes=0, failures=0, final_error=False
    )


def start_failed(
    replica: Replica, error: str, policy: RestartPolicy, now: float, *, final: bool
) -> tuple[Replica, LogEvent]:
    """`final`: the runtime says trying again cannot help (command not found, image missing); the supervisor
    still tries, with its backoff (the operator may fix the host), but a deployment need not wait for it."""
    plan = Plan([])
    why = f"could not start: {error}"
    replica = dataclasses.replace(replica, last_error=why, final_error=final)
    replica = _backoff(replica, Event.START_FAILED, why, 0.0, policy, now, plan)
    return replica, plan.events[0]
