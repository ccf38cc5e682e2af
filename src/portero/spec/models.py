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
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


class AdminSettings(Model):
    """Where the management API listens. Loopback by default: it can stop and start the app."""

    host: str = "127.0.0.1"
    """Address of the admin API. Anything but loopback exposes replica control to that network."""
    port: Port = 9900
    """Port of the admin API; the CLI finds it through `.portero/admin.json` or this file."""


class DockerSettings(Model):
    """The Docker Engine used by the `docker` and `swarm` runtimes."""

    host: str | None = None
    """Engine address, e.g. `unix:///var/run/docker.sock`; the SDK's default when unset."""
    api_version: str | None = None
    """Engine API version, e.g. `1.41`; negotiated when unset."""


class StoreSettings(Model):
    """Where desired state, revisions and events live."""

    redis_url: str | None = None
    """Redis URL for state shared by several porteros; the embedded SQLite file under the state dir when unset."""


class MonitoringSettings(Model):
    """Metrics collection and the seed's two threshold alerts."""

    enabled: bool = True
    """Collect metrics and evaluate alerts."""
    alert_threshold_cpu: Percent = 80
    """CPU percent above which the CPU alert fires."""
    alert_threshold_memory: Percent = 85
    """Memory percent above which the memory alert fires."""


class AutoscaleSettings(Model):
    """The seed's threshold autoscaling, bounded by each service's `replicas.min`/`max`."""

    enabled: bool = False
    """Let the autoscaler move replica counts."""
    scale_up_threshold: Percent = 70
    """Average CPU percent above which a service scales up."""
    scale_down_threshold: Percent = 30
    """Average CPU percent below which a service scales down; must be below `scale_up_threshold`."""

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> AutoscaleSettings:
        if self.scale_down_threshold >= self.scale_up_threshold:
            raise ValueError(
                f"scale_down_threshold ({self.scale_down_threshold}) must be below "
                f"scale_up_threshold ({self.scale_up_threshold})"
            )
        return self


class DeploySettings(Model):
    """How a new revision replaces the running one."""

    strategy: Literal["rolling", "blue-green", "canary"] = "rolling"
    """`rolling`, `blue-green` or `canary`."""


class AlertRule(Model):
    """A threshold rule over a metric, with Prometheus' `for` and `keep_firing_for`."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Rule name, lowercase with dashes."""
    metric: Annotated[str, Field(min_length=1, max_length=200)]
    """Metric the rule watches."""
    op: Literal[">", ">=", "<", "<="] = ">"
    """Comparison of the metric with `threshold`."""
    threshold: float
    """Value the metric is compared with."""
    for_s: Annotated[float, Field(ge=0, le=86_400)] = 60
    """How long the condition must hold before the alert fires (pending until then)."""
    keep_firing_for_s: Annotated[float, Field(ge=0, le=86_400)] = 0
    """How long the alert keeps firing after the condition clears."""
    severity: Literal["info", "warning", "critical"] = "warning"
    """`info`, `warning` or `critical`."""


class AlertSettings(Model):
    """Alert rules beside the seed's CPU and memory thresholds."""

    rules: tuple[AlertRule, ...] = ()
    """List of rules."""


class Replicas(Model):
    """How many replicas: `initial` (defaults to `min` when only `min` is given) is where a service starts."""

    initial: Annotated[int, Field(ge=0, le=100)] = 1
    """Replicas when the service first starts or when this value changes; `portero scale` moves it later."""
    min: Annotated[int, Field(ge=0, le=100)] = 1
    """Fewest replicas `portero scale` and the autoscaler may set (0 allows scale to zero)."""
    max: Annotated[int, Field(ge=1, le=100)] = 10
    """Most replicas `portero scale` and the autoscaler may set."""

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
    """HTTP path probed with GET; any 2xx or 3xx passes."""
    interval_s: Seconds = 2
    """Seconds between checks of a started replica (a starting one is checked every 0.2 s)."""
    timeout_s: Seconds = 1
    """Seconds a check may take before it counts as failed."""
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    """Consecutive passes that make a replica ready (HAProxy's `rise`)."""
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failures that take a ready replica out of rotation (HAProxy's `fall`)."""
    start_period_s: Annotated[float, Field(ge=0, le=3_600)] = 60
    """Seconds a new replica has to pass its first check before it is restarted."""
    restart_after_s: Seconds = 30
    """Seconds an unhealthy replica may stay so before it is restarted (liveness)."""


class RestartPolicy(Model):
    """CrashLoopBackOff: 1 s, doubling, capped; reset after a run this long without a crash."""

    initial_backoff_s: Seconds = 1
    """Delay before the first restart of a crashed replica; each further crash doubles it."""
    max_backoff_s: Seconds = 60
    """Cap of the doubling delay."""
    reset_after_s: Seconds = 60
    """A replica that ran this long before it crashed restarts after `initial_backoff_s` again."""


class Build(Model):
    """How to build the image of a container service."""

    context: Annotated[str, Field(min_length=1)] = "."
    """Build context, relative to the spec file."""
    dockerfile: Annotated[str, Field(min_length=1)] = "Dockerfile"
    """Dockerfile, relative to the context."""
    args: dict[Annotated[str, Field(pattern=ENV_KEY_PATTERN)], str] = Field(default_factory=dict)
    """Build arguments (`ARG`s)."""


class ServiceSpec(Model):
    command: tuple[str, ...] | None = None
    """Argv of a replica (process runtime). A string is split like a shell would, but never run by one;
    `$PORT`, `$PORTERO_REPLICA_ID` and other variables of the replica's environment are substituted."""
    workdir: str | None = None
    """Working directory of a replica, relative to the spec file (the spec file's directory when unset)."""
    image: str | None = None
    """Image of a container replica (docker and swarm runtimes)."""
    build: Build | None = None
    """Build the image from a Dockerfile instead of pulling `image`."""
    version: Annotated[str, Field(max_length=64)] | None = None
    """Version label of the app; given to replicas as `APP_VERSION` unless `env` sets it."""
    port: Port = 5000
    """Port the app listens on inside a container; a process replica gets its own free port as `PORT`."""
    env: dict[Annotated[str, Field(pattern=ENV_KEY_PATTERN)], str] = Field(default_factory=dict)
    """Environment of the replicas, on top of portero's own."""
    replicas: Replicas = Replicas()
    """How many replicas."""
    health: HealthCheck = HealthCheck()
    """Readiness and liveness check."""
    restart: RestartPolicy = RestartPolicy()
    """Restart delays after a crash."""
    stop_grace_s: Seconds = 10
    """Seconds between SIGTERM and SIGKILL when a replica stops."""
    deploy: DeploySettings | None = None
    """This service's deploy strategy; the top-level `deploy` when unset."""

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
    """The whole `portero.yaml`."""

    version: Literal[1] = 1
    """Version of the spec format."""
    runtime: Literal["process", "docker", "swarm"] = "process"
    """Where replicas run: `process` (local processes, the embedded default), `docker` or `swarm`."""
    admin: AdminSettings = AdminSettings()
    """The management API."""
    docker: DockerSettings = DockerSettings()
    """The Docker Engine."""
    store: StoreSettings = StoreSettings()
    """The state store."""
    monitoring: MonitoringSettings = MonitoringSettings()
    """Metrics and the seed's alert thresholds."""
    autoscale: AutoscaleSettings = AutoscaleSettings()
    """The autoscaler."""
    deploy: DeploySettings = DeploySettings()
    """Default deploy strategy of every service."""
    alerts: AlertSettings = AlertSettings()
    """Alert rules."""
    services: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ServiceSpec] = Field(min_length=1)
    """The services, by name (lowercase letters, digits and dashes, starting with a letter)."""

    @model_validator(mode="after")
    def _runnable_on_runtime(self) -> Spec:
        if self.runtime == "process":
            missing = [f"services.{name}.command" for name, svc in self.services.items() if svc.command is None]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required by runtime `process`")
        return self
