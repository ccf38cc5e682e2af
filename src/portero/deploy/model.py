"""A deployment's record: what moves where, how far it got, and why it ended.

Theory of operation: a deployment is one immutable record per step. Its phase moves only through `MOVES`, one
table for every strategy (as replicas.py does for replicas): a move that is not in it raises, naming the
deployment, its phase and the move. The terminal moves (succeed, roll back, abort) set the outcome (`State`)
too, so that a record that is `done` always says how it ended and why.

```
 STARTING --roll--> ROLLING --------------------------succeed--> DONE (succeeded)
 STARTING --switch--> SWITCHED -----------------------succeed--> DONE (succeeded)
 STARTING --shift--> CANARY --next_step--> STARTING   CANARY --succeed--> DONE (succeeded)
 any phase but DONE --roll_back--> DONE (rolled_back)      --abort--> DONE (aborted)
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast, get_args

from portero.spec.models import StrategyName


class State(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"  # the new revision failed a gate (or could not start); the old one serves
    ABORTED = "aborted"  # stopped by the operator, or by a restart of portero: the old revision serves


class Phase(StrEnum):
    STARTING = "starting"  # new replicas come up (a group, or a canary step's); the progress deadline runs
    ROLLING = "rolling"  # replicas replaced a few at a time; the progress deadline runs
    CANARY = "canary"  # a share of traffic on the new revision, under analysis: a planned pause
    SWITCHED = "switched"  # blue-green: all traffic on the new group, the old one kept for instant rollback
    DONE = "done"


class Move(StrEnum):
    ROLL = "roll"  # rolling begins
    SWITCH = "switch"  # blue-green: the green group is ready, all traffic goes to it
    SHIFT = "shift"  # canary: the step's replicas are ready, its share of traffic goes to them
    NEXT_STEP = "next_step"  # canary: a step passed; the next one's replicas start
    SUCCEED = "succeed"
    ROLL_BACK = "roll_back"
    ABORT = "abort"


P, M = Phase, Move
_RUNNING = (P.STARTING, P.ROLLING, P.CANARY, P.SWITCHED)
MOVES: dict[tuple[Phase, Move], tuple[Phase, State]] = {
    (P.STARTING, M.ROLL): (P.ROLLING, State.RUNNING),
    (P.STARTING, M.SWITCH): (P.SWITCHED, State.RUNNING),
    (P.STARTING, M.SHIFT): (P.CANARY, State.RUNNING),
    (P.CANARY, M.NEXT_STEP): (P.STARTING, State.RUNNING),
    (P.ROLLING, M.SUCCEED): (P.DONE, State.SUCCEEDED),
    (P.SWITCHED, M.SUCCEED): (P.DONE, State.SUCCEEDED),
    (P.CANARY, M.SUCCEED): (P.DONE, State.SUCCEEDED),
    **{(phase, M.ROLL_BACK): (P.DONE, State.ROLLED_BACK) for phase in _RUNNING},
    **{(phase, M.ABORT): (P.DONE, State.ABORTED) for phase in _RUNNING},
}
del P, M

# Phases in which the deployment waits for new replicas to become ready: the progress deadline runs only here
# (Kubernetes' progressDeadlineSeconds, Argo Rollouts': a planned pause is not a lack of progress).
WAITING = frozenset({Phase.STARTING, Phase.ROLLING})
# Phases in which the new revision takes requests, so that its analysis counts.
ANALYSED = frozenset({Phase.ROLLING, Phase.CANARY, Phase.SWITCHED})


class MoveError(RuntimeError):
    def __init__(self, deployment: str, phase: Phase, move: Move) -> None:
        super().__init__(f"deployment {deployment}: move {move.value!r} is not allowed in phase {phase.value!r}")


@dataclass(frozen=True)
class Step:
    at: float
    message: str


@dataclass(frozen=True)
class Figures:
    """An analysis window's figures, as recorded: what was judged, the new revision's requests and their p95 at its
    endpoints (from the request sent to a replica to its answer); and apart, never judged, the requests of the
    service that waited in the router's queue over the same window and their p95 wait there."""

    requests: int
    p95_s: float | None
    queued: int
    queue_p95_s: float | None


@dataclass(frozen=True)
class Deployment:
    id: str
    service: str
    from_revision: int
    to_revision: int
    strategy: StrategyName
    kind: str  # "deploy" or "rollback"
    trigger: str  # who or what asked for it
    replicas: int  # how many replicas the strategy moves (at least 1: a service at zero is checked with one)
    started_at: float
    state: State = State.RUNNING
    phase: Phase = Phase.STARTING
    phase_started_at: float = 0.0
    progress_at: float = 0.0  # the last progress (a phase began, a new replica became ready, a group moved)
    finished_at: float | None = None
    new_count: int = 0  # replicas of the new revision the supervisor keeps
    old_count: int = 0  # and of the old one
    ready_new: int = 0  # ready replicas of the new revision at the last pass
    traffic: float | None = None  # share of requests to the new revision; None: spread by ready replicas
    canary_step: int = 0
    failed_requests: int = 0  # 5xx answered by the new revision while it was under analysis
    file_digest: str = ""  # the spec file's template it brings in (apply, up): recorded when it succeeds
    analysis: Figures | None = None  # of the analysis window that the last recorded step was decided on
    steps: tuple[Step, ...] = ()
    reason: str = ""

    def note(self, message: str, now: float, **changes: Any) -> Deployment:
        return dataclasses.replace(self, steps=(*self.steps, Step(now, message)), **changes)

    def move(self, move: Move, message: str, now: float, **changes: Any) -> Deployment:
        """The next phase by `MOVES`, with a step that says why; a terminal move sets the outcome too."""
        target = MOVES.get((self.phase, move))
        if target is None:
            raise MoveError(self.id, self.phase, move)
        phase, state = target
        ended = {"finished_at": now} if state is not State.RUNNING else {}
        return self.note(
            message, now, phase=phase, state=state, phase_started_at=now, progress_at=now, **ended, **changes
        )

    @property
    def finished(self) -> bool:
        return self.state is not State.RUNNING

    @property
    def serving_revision(self) -> int:
        """Which revision is the service's once this deployment has ended."""
        return self.to_revision if self.state is State.SUCCEEDED else self.from_revision

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        fields = {k: v for k, v in data.items() if k in _FIELDS}  # a record of an older portero lacks some
        fields["state"] = State(fields["state"])
        fields["phase"] = Phase(fields["phase"])
        fields["strategy"] = strategy_name(str(fields["strategy"]))
        fields["steps"] = tuple(Step(**s) for s in fields.get("steps", ()))
        if fields.get("analysis") is not None:
            fields["analysis"] = Figures(**fields["analysis"])
        return cls(**fields)


_FIELDS = frozenset(f.name for f in dataclasses.fields(Deployment))


def strategy_name(name: str) -> StrategyName:
    if name in get_args(StrategyName):
        return cast(StrategyName, name)
    raise ValueError(f"unknown deploy strategy {name!r}: expected one of {', '.join(get_args(StrategyName))}")


@dataclass(frozen=True)
class Observation:
    """What the deployer's shell saw this pass."""

    ready_new: int
    ready_old: int
    verdict: Verdict | None = None  # analysis of the new revision since the current phase began
    errors_new: int = 0  # 5xx of the new revision since the deployment began
    unstartable: str | None = None  # why a new replica cannot start, when trying again cannot help


@dataclass(frozen=True)
class Verdict:
    result: str  # "pass", "fail" or "inconclusive"
    reason: str
    requests: int = 0
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)
