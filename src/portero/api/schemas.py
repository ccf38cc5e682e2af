"""Response and request bodies of the management API."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portero.control import ServiceView
from portero.replicas import Replica, ReplicaState
from portero.spec.models import ADDRESS_PATTERN, ENV_KEY_PATTERN, NAME_PATTERN


class ErrorBody(BaseModel):
    status: int
    message: str
    problems: list[str] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


class ServiceHealth(BaseModel):
    desired: int
    ready: int


class ClusterOut(BaseModel):
    """Several porteros sharing one Redis (docs/redis.md); absent with the embedded SQLite store."""

    instance: str
    role: Literal["leader", "follower"]
    leader: str | None = Field(description="Instance id of the portero that leads, as last seen.")
    leader_url: str | None = Field(description="Its admin API; writes sent to a follower are forwarded there.")
    fencing_token: int | None
    store_up: bool
    pending_events: int = Field(description="Events kept in memory while Redis was away, not yet saved.")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    uptime_s: float
    runtime: str
    services: dict[str, ServiceHealth]
    cluster: ClusterOut | None = None


class ReplicaOut(BaseModel):
    id: str
    service: str
    revision: int
    state: str
    address: str | None
    port: int | None
    pid: int | None
    uptime_s: float | None
    restarts: int
    last_exit_code: int | None
    next_start_in_s: float | None
    cpu_percent: float | None = Field(default=None, description="Latest monitor sample: percent of one core.")
    memory_bytes: int | None = Field(default=None, description="Latest monitor sample: resident memory.")

    @classmethod
    def of(cls, replica: Replica, now: float, usage: tuple[float | None, int | None] = (None, None)) -> ReplicaOut:
        process = replica.process
        waiting = replica.next_start_at - now if replica.state is ReplicaState.BACKOFF else None
        return cls(
            id=replica.id,
            service=replica.service,
            revision=replica.revision,
            state=replica.state.value,
            address=f"{process.host}:{process.port}" if process else None,
            port=process.port if process else None,
            pid=process.pid if process else None,
            uptime_s=round(now - replica.started_at, 1) if process and replica.started_at else None,
            restarts=replica.restarts,
            last_exit_code=replica.last_exit_code,
            next_start_in_s=round(max(waiting, 0.0), 1) if waiting is not None else None,
            cpu_percent=usage[0],
            memory_bytes=usage[1],
        )


class ContainersOut(BaseModel):
    containers: list[ReplicaOut]


class StatsOut(BaseModel):
    id: str
    service: str
    state: str
    pid: int
    app_pid: int | None
    cpu_percent: float = Field(description="Percent of one core, summed over the replica's processes.")
    memory_bytes: int
    memory_percent: float
    processes: int
    uptime_s: float
    restarts: int


class ServiceOut(BaseModel):
    name: str
    revision: int
    desired: int
    ready: int
    min: int
    max: int
    replicas: list[ReplicaOut]

    @classmethod
    def of(
        cls, view: ServiceView, now: float, usage: dict[str, tuple[float | None, int | None]] | None = None
    ) -> ServiceOut:
        return cls(
            name=view.name,
            revision=view.record.revision,
            desired=view.record.desired,
            ready=sum(1 for r in view.replicas if r.state is ReplicaState.READY),
            min=view.spec.replicas.min,
            max=view.spec.replicas.max,
            replicas=[ReplicaOut.of(r, now, (usage or {}).get(r.id, (None, None))) for r in view.replicas],
        )


class ServicesOut(BaseModel):
    services: list[ServiceOut]


class Body(BaseModel):
    """Request bodies are strict: `"3"` is not a count, and unknown fields are refused by name."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ScaleIn(Body):
    replicas: int = Field(ge=0, le=100, examples=[3])


class SpecIn(Body):
    yaml: str = Field(min_length=1, max_length=1_000_000, description="The whole portero.yaml text.")
    source: str = Field(default="api", max_length=200)


class AppliedOut(BaseModel):
    changes: list[str]


class EventOut(BaseModel):
    id: int | None
    at: float
    kind: str
    subject: str
    service: str | None
    message: str
    data: dict[str, object]


class EventsOut(BaseModel):
    events: list[EventOut]


class LogLineOut(BaseModel):
    at: float
    service: str
    replica: str
    stream: str
    text: str


class LogsOut(BaseModel):
    lines: list[LogLineOut]


class Accepted(BaseModel):
    status: str


class ServerIn(Body):
    service: str = Field(pattern=NAME_PATTERN, examples=["portal"])
    address: str = Field(pattern=ADDRESS_PATTERN, max_length=300, examples=["127.0.0.1:5001"])
    weight: int = Field(default=1, ge=0, le=1000)


class ServerRef(Body):
    service: str = Field(pattern=NAME_PATTERN, examples=["portal"])
    address: str = Field(pattern=ADDRESS_PATTERN, max_length=300, examples=["127.0.0.1:5001"])


class WeightIn(ServerRef):
    weight: int = Field(ge=0, le=1000)


class DrainIn(ServerRef):
    timeout_s: float | None = Field(default=None, gt=0, le=3600)


class ServerOut(BaseModel):
    address: str
    service: str
    source: Literal["replica", "static", "registered"]
    replica: str | None
    state: Literal["active", "draining", "down"]
    weight: int
    effective_weight: float
    health: Literal["up", "down"] | None = Field(
        description="Active checks; null for replicas (the supervisor checks them)."
    )
    breaker: Literal["closed", "open", "half_open"]
    ejected: bool
    in_flight: int
    requests: int
    responses: dict[str, int]
    errors: int
    retries: int
    ejections: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None


class ServersOut(BaseModel):
    servers: list[ServerOut]


class DeployIn(Body):
    service: str = Field(pattern=NAME_PATTERN, examples=["portal"])
    version: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$", examples=["v2"])
    image: str | None = Field(default=None, max_length=255, pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")
    env: dict[str, str] = Field(default_factory=dict, description="Environment changes (`--set KEY=VAL`).")
    strategy: Literal["rolling", "blue-green", "canary"] | None = None

    @field_validator("env")
    @classmethod
    def _env_keys(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not re.fullmatch(ENV_KEY_PATTERN, key) or len(value) > 4096:
                raise ValueError(f"env key {key!r}: expected a variable name and a value of at most 4096 characters")
        return env


class RollbackIn(Body):
    service: str = Field(pattern=NAME_PATTERN, examples=["portal"])
    revision: int | None = Field(default=None, ge=1, description="A kept revision; the previous one when unset.")


class StepOut(BaseModel):
    at: float
    message: str


class DeploymentOut(BaseModel):
    id: str
    service: str
    from_revision: int
    to_revision: int
    strategy: str
    kind: str
    trigger: str
    replicas: int
    started_at: float
    state: Literal["running", "succeeded", "rolled_back", "aborted"]
    phase: str
    phase_started_at: float
    finished_at: float | None
    new_count: int
    old_count: int
    traffic: float | None
    canary_step: int
    failed_requests: int
    steps: list[StepOut]
    reason: str


class DeploymentsOut(BaseModel):
    deployments: list[DeploymentOut]


class RevisionOut(BaseModel):
    service: str
    number: int
    digest: str
    created_at: float
    reason: str
    serving: bool
    version: str | None


class RevisionsOut(BaseModel):
    revisions: list[RevisionOut]
