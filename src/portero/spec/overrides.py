"""The seed's environment variables, read with pydantic-settings, and where each lands in the spec."""

from __future__ import annotations

from typing import Any

from pydantic import Field
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

    def set_values(self) -> dict[str, Any]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


def apply_overrides(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the raw spec with each set variable written at its path (environment wins)."""
    result = _deep_copy(raw)
    for name, value in values.items():
        path = TARGETS[name]
        if path[0] == "services" and path[1] == "*":
            services = result.get("services")
            if isinstance(services, dict):
                for service in services.values():
                    if isinstance(service, dict):
                        _set(service, path[2:], value)
                        _clamp_initial(service)
        else:
            _set(result, path, value)
    return result


def _clamp_initial(service: dict[str, Any]) -> None:
    """MIN_/MAX_REPLICAS bound the file's `initial` as HPA bounds a deployment's replicas."""
    replicas = service.get("replicas")
    if not isinstance(replicas, dict):
        return
    initial, low, high = replicas.get("initial"), replicas.get("min"), replicas.get("max")
    if type(initial) is int:
        if type(low) is int:
            initial = max(initial, low)
        if type(high) is int:
            initial = min(initial, high)
        replicas["initial"] = initial


def _set(node: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            if child is not None:
                return  # a wrong type in the file stays for validation to report, with its path
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _deep_copy(value: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = _copy(value)
    return copied


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
