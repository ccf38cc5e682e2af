"""Response and request bodies of the management API."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portero.control import ServiceView
from portero.replicas import Replica, ReplicaState
from portero.runtimes.accounts import runs_as
from portero.spec.models import ADDRESS_PATTERN, ENV_KEY_PATTERN, NAME_PATTERN


class ErrorBody(BaseModel):
    status: int
    message: str
    problems: list[str] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": {"status": 404, "message": "no replica named 'nope'", "problems": []}},
                {
                    "error": {
                        "status": 422,
                        "message": "invalid request",
                        "problems": ["body.replicas: Input should be a valid integer"],
                    }
                },
            ]
        }
    )

    error: ErrorBody


class ServiceHealth(BaseModel):
    desired: int
    ready: int
    routable: int | None = Field(
        default=None,
        description="Endpoints that take requests (not draining, weight above 0); null with the router off.",
    )
    problems: list[str] = Field(default_factory=list, description="Why the service is degraded; empty when it is not.")


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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "version": "0.1.0",
                    "uptime_s": 1.8,
                    "runtime": "process",
                    "services": {"portal": {"desired": 3, "ready": 3, "routable": 3, "problems": []}},
                }
            ]
        }
    )

    status: Literal["ok", "degraded"]
    version: str
    uptime_s: float
    runtime: str
    services: dict[str, ServiceHealth]
    cluster: ClusterOut | None = None


class ReplicaOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "portal-1-eea0",
                    "service": "portal",
                    "revision": 1,
                    "state": "ready",
                    "address": "127.0.0.1:35297",
                    "port": 35297,
                    "pid": 9140,
                    "uptime_s": 1.8,
                    "restarts": 0,
                    "last_exit_code": None,
                    "next_start_in_s": None,
                    "cpu_percent": 0.4,
                    "memory_bytes": 113967104,
                }
            ]
        }
    )

    id: str
    service: str
    revision: int
    state: str
    address: str | None
    port: int | None
    pid: int | None
    node: str | None = Field(default=None, description="Machine it runs on, where the runtime has several (swarm).")
    uptime_s: float | None
    restarts: int
    last_exit_code: int | None
    next_start_in_s: float | None
    cpu_percent: float | None = Field(default=None, description="Latest monitor sample: percent of one core.")
    memory_bytes: int | None = Field(default=None, description="Latest monitor sample: resident memory.")
    last_error: str | None = Field(
        default=None, description="Why it last failed to start, crashed or was recycled; none once it is ready."
    )
    last_error_final: bool = Field(
        default=False, description="Trying again cannot help as things are (command not found, image missing)."
    )

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
            node=process.node if process else None,
            uptime_s=round(now - replica.started_at, 1) if process and replica.started_at else None,
            restarts=replica.restarts,
            last_exit_code=replica.last_exit_code,
            next_start_in_s=round(max(waiting, 0.0), 1) if waiting is not None else None,
            cpu_percent=usage[0],
            memory_bytes=usage[1],
            last_error=replica.last_error,
            last_error_final=replica.final_error,
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
    managed: bool = Field(description="portero runs its replicas; false: it only routes to the spec's endpoints.")
    revision: int
    desired: int
    ready: int
    min: int
    max: int
    user: str | None = Field(
        default=None,
        description="Who its replicas run as: `services.NAME.user`, else portero's own user (process runtime; "
        "`root` is warned about); null when a container image decides.",
    )
    replicas: list[ReplicaOut]

    @classmethod
    def of(
        cls,
        view: ServiceView,
        now: float,
        usage: dict[str, tuple[float | None, int | None]] | None = None,
        *,
        runtime: str,
    ) -> ServiceOut:
        return cls(
            name=view.name,
            managed=view.spec.managed,
            revision=view.record.revision,
            desired=view.record.desired if view.spec.managed else 0,
            ready=sum(1 for r in view.replicas if r.state is ReplicaState.READY),
            min=view.spec.replicas.min,
            max=view.spec.replicas.max,
            user=runs_as(view.spec, runtime),
            replicas=[ReplicaOut.of(r, now, (usage or {}).get(r.id, (None, None))) for r in view.replicas],
        )


class ServicesOut(BaseModel):
    services: list[ServiceOut]


class Body(BaseModel):
    """Request bodies are strict: `"3"` is not a count, and unknown fields are refused by name."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ScaleIn(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"replicas": 3}]})

    replicas: int = Field(ge=0, le=100, examples=[3])


class SpecIn(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "yaml": "services:\n  portal:\n    command: gunicorn --bind 127.0.0.1:${PORT} main:app\n"
                    "    replicas: {initial: 3, min: 1, max: 10}\n",
                    "source": "portero.yaml",
                }
            ]
        }
    )

    yaml: str = Field(min_length=1, max_length=1_000_000, description="The whole portero.yaml text.")
    source: str = Field(default="api", max_length=200)


class AppliedOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "changes": [
                        "router.port: 8000 -> 8080: the router listens there now, hitless (connections on the old "
                        "port finish)",
                        "services.portal.version: v1 -> v2: revision 2, deployment portal-1764300000-a1b2 (rolling)",
                    ],
                    "deployments": ["portal-1764300000-a1b2"],
                }
            ]
        }
    )

    changes: list[str] = Field(description="Each changed field, old -> new, and how it took effect.")
    deployments: list[str] = Field(
        default_factory=list, description="Deployments the spec started: follow them at /deployments/{id}."
    )


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
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "stopping", "stop_within_s": 47.0}]})

    status: str
    stop_within_s: float | None = Field(
        default=None,
        description="How long the stop may take: its longest ladder (the router's workers' grace, then every "
        "replica's stop_grace_s and SIGKILL); `portero down` waits this long.",
    )


class ServerIn(Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"service": "portal", "address": "127.0.0.1:5001", "weight": 2}]}
    )

    service: str = Field(pattern=NAME_PATTERN, examples=["portal"])
    address: str = Field(pattern=ADDRESS_PATTERN, max_length=300, examples=["127.0.0.1:5001"])
    weight: int = Field(default=1, ge=0, le=1000)


class ServerRef(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"service": "portal", "address": "127.0.0.1:5001"}]})

    service: str = Field(pattern=NAME_PATTERN, examples=["portal"])
    address: str = Field(pattern=ADDRESS_PATTERN, max_length=300, examples=["127.0.0.1:5001"])


class WeightIn(ServerRef):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"service": "portal", "address": "127.0.0.1:5001", "weight": 0}]}
    )

    weight: int = Field(ge=0, le=1000, description="0 takes it out of rotation without draining it.")


class DrainIn(ServerRef):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"service": "portal", "address": "127.0.0.1:5001", "timeout_s": 30}]}
    )

    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    force: bool = Field(default=False, description="Drain it even if it is the last endpoint that takes requests.")


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
    requests: int = Field(description="Tries sent to it, retries included.")
    responses: dict[str, int]
    faults: dict[str, int] = Field(
        description="Tries it failed, by kind: refused, connect_timeout, reset, timeout, stalled, bad_response."
    )
    errors: int = Field(description="5xx answers and faults.")
    retries: int = Field(description="Tries that failed here and were tried again elsewhere.")
    ejections: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None


class ServersOut(BaseModel):
    servers: list[ServerOut]


class DeployIn(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"service": "portal", "version": "v2", "strategy": "canary"},
                {"service": "portal", "env": {"FEATURE_X": "on"}},
            ]
        }
    )

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
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"service": "portal"}, {"service": "portal", "revision": 3}]}
    )

    service: str = Field(pattern=NAME_PATTERN, examples=["portal"])
    revision: int | None = Field(default=None, ge=1, description="A kept revision; the previous one when unset.")


class StepOut(BaseModel):
    at: float
    message: str


class AnalysisOut(BaseModel):
    requests: int = Field(description="The new revision's requests in the analysis window.")
    p95_s: float | None = Field(
        description="Their p95 latency at its endpoints, from the request sent to a replica to its answer: judged."
    )
    queued: int = Field(description="Requests of the service that waited in the router's queue in the same window.")
    queue_p95_s: float | None = Field(description="Their p95 wait in the queue: reported apart, never judged.")


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
    analysis: AnalysisOut | None = Field(
        default=None, description="The analysis window the last recorded step was decided on (none: not analysed)."
    )
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
