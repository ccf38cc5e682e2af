"""The declarative spec: what should run (`portero.yaml` plus the seed's environment overrides).

The names below load their module when first used: a router worker needs the models only, and the loader's
pydantic-settings cost a fifth of a second of every worker's start (docs/router.md, "Workers").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portero.spec.loader import SpecError, load_spec, parse_spec
    from portero.spec.models import HealthCheck, Replicas, ServiceSpec, Spec

__all__ = ["HealthCheck", "Replicas", "ServiceSpec", "Spec", "SpecError", "load_spec", "parse_spec"]
_HOMES = {"SpecError": "loader", "load_spec": "loader", "parse_spec": "loader"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'portero.spec' has no attribute {name!r}")
    return getattr(importlib.import_module(f"portero.spec.{_HOMES.get(name, 'models')}"), name)
