"""Replicas and their lifecycle, as one explicit transition table.

Theory of operation: a replica record is the supervisor's memory of one running copy of a service revision.
The record survives restarts of portero (it lives in the store); the process it describes may or may not.
Every state change goes through `transition`, which refuses any move not listed in `TRANSITIONS`, so an
impossible history (a stopped replica becoming ready, say) is a loud error instead of a silent bug.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum


class ReplicaState(StrEnum):
    PENDING = "pending"  # should run, not started yet
    STARTING = "starting"  # running, its health check has not passed yet
    READY = "ready"  # running and healthy: in rotation
    UNHEALTHY = "unhealthy"  # running, was ready, now failing its checks: out of rotation
    STOPPING = "stopping"  # asked to stop, waiting for it to exit
    STOPPED = "stopped"  # not running, held so by the operator
    BACKOFF = "backoff"  # exited unexpectedly, waits out its restart delay


class Event(StrEnum):
    STARTED = "started"
    START_FAILED = "start_failed"
    PASSED_CHECKS = "passed_checks"
    FAILED_CHECKS = "failed_checks"
    EXITED = "exited"
    STOP_REQUESTED = "stop_requested"
    START_REQUESTED = "start_requested"
    BACKOFF_ELAPSED = "backoff_elapsed"
    RECYCLED = "recycled"  # stopped on purpose in order to start again (failed checks)


class StopIntent(StrEnum):
    RETIRE = "retire"  # scale-down or an old revision: forget the replica once it exits
    HOLD = "hold"  # the operator stopped it: keep the slot, do not restart
    RESTART = "restart"  # it failed its checks: start it again after its backoff


S, E = ReplicaState, Event
TRANSITIONS: dict[tuple[ReplicaState, Event], ReplicaState] = {
    (S.PENDING, E.STARTED): S.STARTING,
    (S.PENDING, E.START_FAILED): S.BACKOFF,
    (S.PENDING, E.STOP_REQUESTED): S.STOPPED,
    (S.STARTING, E.PASSED_CHECKS): S.READY,
    (S.STARTING, E.FAILED_CHECKS): S.STOPPING,
    (S.STARTING, E.EXITED): S.BACKOFF,
    (S.STARTING, E.STOP_REQUESTED): S.STOPPING,
    (S.READY, E.FAILED_CHECKS): S.UNHEALTHY,
    (S.READY, E.EXITED): S.BACKOFF,
    (S.READY, E.STOP_REQUESTED): S.STOPPING,
    (S.UNHEALTHY, E.PASSED_CHECKS): S.READY,
    (S.UNHEALTHY, E.FAILED_CHECKS): S.STOPPING,
    (S.UNHEALTHY, E.EXITED): S.BACKOFF,
    (S.UNHEALTHY, E.STOP_REQUESTED): S.STOPPING,
    (S.STOPPING, E.EXITED): S.STOPPED,
    (S.STOPPING, E.RECYCLED): S.BACKOFF,
    (S.STOPPING, E.STOP_REQUESTED): S.STOPPING,
    (S.STOPPED, E.START_REQUESTED): S.PENDING,
    (S.STOPPED, E.STOP_REQUESTED): S.STOPPED,
    (S.BACKOFF, E.BACKOFF_ELAPSED): S.PENDING,
    (S.BACKOFF, E.STOP_REQUESTED): S.STOPPED,
}
del S, E

KILLED_SHOWN = 5  # leftover processes named in an exit's description

RUNNING = frozenset({ReplicaState.STARTING, ReplicaState.READY, ReplicaState.UNHEALTHY, ReplicaState.STOPPING})


class TransitionError(RuntimeError):
    def __init__(self, replica_id: str, state: ReplicaState, event: Event) -> None:
        super().__init__(f"replica {replica_id}: event {event.value!r} is not allowed in state {state.value!r}")


@dataclass(frozen=True)
class Process:
    """Where a running replica is, and what identifies its process beyond a reusable pid."""

    host: str
    port: int
    pid: int  # the replica's group leader: signals go here
    started_token: float  # the leader's creation time: a recycled pid does not match it
    app_pid: int | None = None  # the app's own process, under the leader
    node: str | None = None  # the machine it runs on, where a runtime has several (a Swarm node's hostname)


@dataclass(frozen=True)
class Exit:
    """How a replica's process ended, as its runtime reports it."""

    code: int  # 128 + N when ended by signal N, as a shell reports it
    signal: int | None = None
    ran_s: float | None = None
    killed: tuple[str, ...] = ()  # processes of the replica that had to be killed (`pid command`): its leftovers

    def describe(self) -> str:
        if self.signal is not None:
            how = f"killed by signal {self.signal}"
        elif self.code < 0:
            how = "exited (status unknown)"
        else:
            how = f"exited with code {self.code}"
        if not self.killed:
            return how
        shown = "; ".join(self.killed[:KILLED_SHOWN]) + (
            f"; and {len(self.killed) - KILLED_SHOWN} more" if len(self.killed) > KILLED_SHOWN else ""
        )
        return f"{how}; had to kill {len(self.killed)} process(es): {shown}"


@dataclass(frozen=True)
class Replica:
    id: str
    service: str
    revision: int
    state: ReplicaState = ReplicaState.PENDING
    process: Process | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    backoff_s: float = 0.0
    next_start_at: float = 0.0
    last_exit_code: int | None = None
    stop_intent: StopIntent | None = None
    passes: int = 0  # consecutive health check results, HAProxy's rise/fall counters
    failures: int = 0
    unhealthy_since: float | None = None
    last_error: str | None = None  # why it last failed to start, crashed or was recycled; cleared once it is ready
    final_error: bool = False  # that failure cannot heal by trying again (command not found, image missing)

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    def transition(self, event: Event, **changes: object) -> Replica:
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise TransitionError(self.id, self.state, event)
        return dataclasses.replace(self, state=target, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Replica:
        fields = dict(data)
        process = fields.pop("process", None)
        fields["state"] = ReplicaState(str(fields["state"]))
        if fields.get("stop_intent") is not None:
            fields["stop_intent"] = StopIntent(str(fields["stop_intent"]))
        if isinstance(process, dict):
            fields["process"] = Process(**process)
        return cls(**fields)  # type: ignore[arg-type]
