"""The seed's environment variables, read with pydantic-settings, and where each lands in the spec."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# variable -> path in the spec; `*` stands for every service.
TARGETS: dict[str, tuple[str, ...]] = {
    "DOCKER_HOST": ("docker", "host"),
    "DOCKER_API_VERSION": ("docker", "api_version"),
    "REDIS_URL": ("store", "redis_url"),
    "MONITORING_ENABLED": ("monitoring", "enabled"),
    "ALERT_THRESHOLD_CPU": ("monitoring", "alert_threshold_cpu"),
    "ALERT_THRESHOLD_MEMORY": ("monitoring", "alert_threshold_memory"),
    "AUTO_SCALE_ENABLED": ("autoscale", "enabled"),
    "SCALE_UP_THRESHOLD": ("autoscale", "scale_up_threshold"),
    "SCALE_DOWN_THRESHOLD": ("autoscale", "scale_down_threshold"),
    "MIN_REPLICAS": ("services", "*", "replicas", "min"),
    "MAX_REPLICAS": ("services", "*", "replicas", "max"),
}


class SeedEnvironment(BaseSettings):
    """Typed view of the variables; a value that does not parse is refused with the variable's name."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    DOCKER_HOST: str | None = None
    DOCKER_API_VERSION: str | None = None
    REDIS_URL: str | None = None
    MONITORING_ENABLED: bool | None = None
    ALERT_THRESHOLD_CPU: float | None = Field(default=None, ge=0, le=100)
    ALERT_THRESHOLD_MEMORY: float | None = Field(default=None, ge=0, le=100)
    AUTO_SCALE_ENABLED: bool | None = None
    SCALE_UP_THRESHOLD: float | None = Field(default=None, ge=0, le=100)
    SCALE_DOWN_THRESHOLD: float | None = Field(default=None, ge=0, le=100)
    MIN_REPLICAS: int | None = Field(default=None, ge=0, le=100)
    MAX_REPLICAS: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> SeedEnvironment:
        low, high = self.MIN_REPLICAS, self.MAX_REPLICAS
        if low is not None and high is not None and low > high:
            raise ValueError(f"MIN_REPLICAS ({low}) must not exceed MAX_REPLICAS ({high})")
        down, up = self.SCALE_DOWN_THRESHOLD, self.SCALE_UP_THRESHOLD
        if down is not None and up is not None and down >= up:
            raise ValueError(f"SCALE_DOWN_THRESHOLD ({down}) must be below SCALE_UP_THRESHOLD ({up})")
        return self

    def set_values(self) -> dict[str, Any]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


def apply_overrides(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the raw spec with each set variable written at its path (environment wins)."""
    result = copy.deepcopy(raw)
    for name, value in values.items():
        path = TARGETS[name]
        if path[0] == "services" and path[1] == "*":
            services = result.get("services")
            if isinstance(services, dict):
                for service in services.values():
                    if isinstance(service, dict):
                        _set(service, path[2:], value)
                        _clamp_initial(service, name, value)
        else:
            _set(result, path, value)
    return result


def _clamp_initial(service: dict[str, Any], name: str, bound: int) -> None:
    """MIN_/MAX_REPLICAS bound the file's `initial` as HPA bounds a deployment's replicas; only toward the
    bound the variable set, so a file that contradicts itself is still refused."""
    replicas = service.get("replicas")
    if not isinstance(replicas, dict) or type(replicas.get("initial")) is not int:
        return
    pick = max if name == "MIN_REPLICAS" else min
    replicas["initial"] = pick(replicas["initial"], bound)


def _set(node: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            if child is not None:
                return  # a wrong type in the file stays for validation to report, with its path
            child = node[key] = {}
        node = child
    node[path[-1]] = value
