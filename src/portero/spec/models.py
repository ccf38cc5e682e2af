"""Pydantic models of `portero.yaml`.

Strict on purpose: a wrong type, an unknown key or an out-of-range number is refused with its field path
rather than coerced, because a spec that means something other than what was written is worse than none.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Seconds = Annotated[float, Field(gt=0, le=86_400)]
Percent = Annotated[float, Field(ge=0, le=100)]
Port = Annotated[int, Field(ge=1, le=65_535)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AdminSettings(Model):
    """Where the management API listens. Loopback by default: it can stop and start the app."""

    host: str = "127.0.0.1"
    port: Port = 9900


class DockerSettings(Model):
    host: str | None = Field(default=None, description="Docker Engine address (DOCKER_HOST).")
    api_version: str | None = Field(default=None, description="Engine API version (DOCKER_API_VERSION).")


class StoreSettings(Model):
    redis_url: str | None = Field(default=None, description="Redis store when set (REDIS_URL); SQLite otherwise.")


class MonitoringSettings(Model):
    enabled: bool = True
    alert_threshold_cpu: Percent = 80
    alert_threshold_memory: Percent = 85


class AutoscaleSettings(Model):
    enabled: bool = False
    scale_up_threshold: Percent = 70
    scale_down_threshold: Percent = 30

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> AutoscaleSettings:
        if self.scale_down_threshold >= self.scale_up_threshold:
            raise ValueError(
                f"scale_down_threshold ({self.scale_down_threshold}) must be below "
                f"scale_up_threshold ({self.scale_up_threshold})"
            )
        return self


class DeploySettings(Model):
    strategy: Literal["rolling", "blue-green", "canary"] = "rolling"


class AlertRule(Model):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    metric: Annotated[str, Field(min_length=1, max_length=200)]
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    for_s: Annotated[float, Field(ge=0, le=86_400)] = 60
    keep_firing_for_s: Annotated[float, Field(ge=0, le=86_400)] = 0
    severity: Literal["info", "warning", "critical"] = "warning"


class AlertSettings(Model):
    rules: tuple[AlertRule, ...] = ()


class Replicas(Model):
    """How many replicas: `initial` (defaults to `min`) is where a new service starts."""

    initial: Annotated[int, Field(ge=0, le=100)] = 1
    min: Annotated[int, Field(ge=0, le=100)] = 1
    max: Annotated[int, Field(ge=1, le=100)] = 10

    @model_validator(mode="before")
    @classmethod
    def _initial_defaults_to_min(cls, data: object) -> object:
        if isinstance(data, dict) and "initial" not in data and "min" in data:
            return {**data, "initial": data["min"]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        if not self.min <= self.initial <= self.max:
            raise ValueError(f"initial ({self.initial}) must lie within min..max ({self.min}..{self.max})")
        return self


class HealthCheck(Model):
    """An HTTP readiness check, with HAProxy's rise/fall thresholds and Kubernetes' start period."""

    path: Annotated[str, Field(pattern=r"^/[!-~]*$", max_length=512)] = "/health"
    interval_s: Seconds = 2
    timeout_s: Seconds = 1
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    start_period_s: Annotated[float, Field(ge=0, le=3_600)] = 60
    restart_after_s: Seconds = 30  # liveness: a replica unhealthy this long is restarted


class RestartPolicy(Model):
    """CrashLoopBackOff: 1 s, doubling, capped; reset after a run this long without a crash."""

    initial_backoff_s: Seconds = 1
    max_backoff_s: Seconds = 60
    reset_after_s: Seconds = 60


class Build(Model):
    context: Annotated[str, Field(min_length=1)] = "."
    dockerfile: Annotated[str, Field(min_length=1)] = "Dockerfile"
    args: dict[Annotated[str, Field(pattern=ENV_KEY_PATTERN)], str] = Field(default_factory=dict)


class ServiceSpec(Model):
    command: tuple[str, ...] | None = Field(
        default=None, description="Process runtime: argv (a string is split like a shell, never run by one)."
    )
    workdir: str | None = Field(default=None, description="Working directory, relative to the spec file.")
    image: str | None = None
    build: Build | None = None
    version: Annotated[str, Field(max_length=64)] | None = None
    port: Port = 5000
    env: dict[Annotated[str, Field(pattern=ENV_KEY_PATTERN)], str] = Field(default_factory=dict)
    replicas: Replicas = Replicas()
    health: HealthCheck = HealthCheck()
    restart: RestartPolicy = RestartPolicy()
    stop_grace_s: Seconds = 10
    deploy: DeploySettings | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("command must not be empty")
        return value

    @model_validator(mode="after")
    def _something_to_run(self) -> ServiceSpec:
        if self.command is None and self.image is None and self.build is None:
            raise ValueError("a service needs `command` (process runtime) or `image`/`build` (containers)")
        return self

    def template_digest(self) -> str:
        """Digest of what makes a replica what it is; replica counts and checks are not part of it."""
        template = self.model_dump(include={"command", "workdir", "image", "build", "version", "port", "env"})
        blob = json.dumps(template, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Spec(Model):
    version: Literal[1] = 1
    runtime: Literal["process", "docker", "swarm"] = "process"
    admin: AdminSettings = AdminSettings()
    docker: DockerSettings = DockerSettings()
    store: StoreSettings = StoreSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    autoscale: AutoscaleSettings = AutoscaleSettings()
    deploy: DeploySettings = DeploySettings()
    alerts: AlertSettings = AlertSettings()
    services: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ServiceSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _runnable_on_runtime(self) -> Spec:
        if self.runtime == "process":
            missing = [f"services.{name}.command" for name, svc in self.services.items() if svc.command is None]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required by runtime `process`")
        return self
