"""A deployment's record: what moves where, how far it got, and why it ended."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"  # the new revision failed a gate; the old one serves
    ABORTED = "aborted"  # portero restarted in the middle: the old revision was restored


class Phase(StrEnum):
    STARTING = "starting"  # the new group comes up
    ROLLING = "rolling"  # replicas replaced a few at a time
    CANARY = "canary"  # a share of traffic on the new revision, under analysis
    SWITCHED = "switched"  # blue-green: all traffic on the new group, the old one kept for instant rollback
    DONE = "done"


@dataclass(frozen=True)
class Step:
    at: float
    message: str


@dataclass(frozen=True)
class Deployment:
    id: str
    service: str
    from_revision: int
    to_revision: int
    strategy: str
    kind: str  # "deploy" or "rollback"
    trigger: str  # who or what asked for it
    replicas: int
    started_at: float
    state: State = State.RUNNING
    phase: Phase = Phase.STARTING
    phase_started_at: float = 0.0
    finished_at: float | None = None
    new_count: int = 0  # replicas of the new revision the supervisor keeps
    old_count: int = 0  # and of the old one
    traffic: float | None = None  # share of requests to the new revision; None: spread by ready replicas
    canary_step: int = 0
    failed_requests: int = 0  # 5xx answered by the new revision while it was under analysis
    steps: tuple[Step, ...] = ()
    reason: str = ""

    def note(self, message: str, now: float, **changes: Any) -> Deployment:
        return dataclasses.replace(self, steps=(*self.steps, Step(now, message)), **changes)

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
        fields = dict(data)
        fields["state"] = State(fields["state"])
        fields["phase"] = Phase(fields["phase"])
        fields["steps"] = tuple(Step(**s) for s in fields.get("steps", ()))
        return cls(**fields)


@dataclass(frozen=True)
class Observation:
    """What the deployer's shell saw this pass."""

    ready_new: int
    ready_old: int
    verdict: Verdict | None = None  # analysis of the new revision since the current phase began
    errors_new: int = 0  # 5xx of the new revision since the deployment began


@dataclass(frozen=True)
class Verdict:
    result: str  # "pass", "fail" or "inconclusive"
    reason: str
    requests: int = 0
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)
