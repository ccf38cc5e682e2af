"""Revisions: immutable, numbered snapshots of what a service runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Revision:
    service: str
    number: int
    digest: str  # of the service's template: same digest, same revision
    template: dict[str, Any]  # the ServiceSpec as applied, as JSON data
    created_at: float
    reason: str
