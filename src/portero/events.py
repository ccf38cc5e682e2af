"""The event log: what happened, to whom, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str  # e.g. replica.restarted, spec.applied; a dotted noun.verb in the past tense
    subject: str  # the replica, service or revision it happened to
    message: str  # the reason, for a person
    service: str | None = None
    at: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
