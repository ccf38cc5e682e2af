"""The autoscaler, explained: policy, current signals and the last decisions of every service."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from portero.autoscale.loop import Autoscaler
from portero.control import ControlPlane


class DecisionOut(BaseModel):
    at: float
    current: int
    desired: int
    raw: int
    reason: str
    changed: bool
    held: bool
    inputs: dict[str, float]


class ServiceScalingOut(BaseModel):
    service: str
    enabled: bool
    desired: int
    min: int
    max: int
    policy: dict[str, Any]
    signals: dict[str, Any] | None
    cold_starts_s: list[float]
    decisions: list[DecisionOut]


class AutoscalerOut(BaseModel):
    enabled: bool
    services: list[ServiceScalingOut]


def summary(control: ControlPlane, autoscaler: Autoscaler | None) -> AutoscalerOut:
    """Whether it runs, and per managed service its policy, the signals it sees and its last decisions."""
    services = []
    for name, spec in control.spec.services.items():
        if not spec.managed or name not in control.records:
            continue
        signals = autoscaler.signals.get(name) if autoscaler is not None else None
        decisions = list(autoscaler.decisions.get(name, ())) if autoscaler is not None else []
        services.append(
            ServiceScalingOut(
                service=name,
                enabled=spec.autoscale.enabled,
                desired=control.records[name].desired,
                min=spec.replicas.min,
                max=spec.replicas.max,
                policy=spec.autoscale.model_dump(mode="json"),
                signals=dataclasses.asdict(signals) if signals is not None else None,
                cold_starts_s=autoscaler.cold_starts.get(name, []) if autoscaler is not None else [],
                decisions=[DecisionOut(**{k: v for k, v in vars(d).items() if k != "service"}) for d in decisions],
            )
        )
    return AutoscalerOut(enabled=control.spec.autoscale.enabled, services=services)


def routes(control: ControlPlane, autoscaler: Autoscaler | None) -> APIRouter:
    api = APIRouter(prefix="/scalability", tags=["autoscaler"])

    @api.get("/autoscaler", summary="The autoscaler's policy, signals and decisions per service")
    async def status() -> AutoscalerOut:
        """Whether it runs (`autoscale.enabled`, AUTO_SCALE_ENABLED), and per service what it sees and decided."""
        return summary(control, autoscaler)

    return api
