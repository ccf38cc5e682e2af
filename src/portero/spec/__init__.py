"""The declarative spec: what should run (`portero.yaml` plus the seed's environment overrides)."""

from portero.spec.loader import SpecError, load_spec, parse_spec
from portero.spec.models import HealthCheck, Replicas, ServiceSpec, Spec

__all__ = ["HealthCheck", "Replicas", "ServiceSpec", "Spec", "SpecError", "load_spec", "parse_spec"]
