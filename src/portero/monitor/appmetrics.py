"""An app's own Prometheus exposition as series samples, labelled with the service and replica that served it.

Pure: text in, samples out (prometheus_client's parser reads the text). Counters, and the `_bucket`/`_sum`/
`_count` of histograms and summaries, become counter series; everything else a gauge. `_created` samples are
left out (a timestamp, not a measurement). An app label named `service` or `replica` is kept as
`exported_service`/`exported_replica`, as Prometheus does, so that it cannot pass for another replica's. A name
that portero itself records (`replica_cpu_percent`...) gets the `app_` prefix rather than mixing with portero's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from portero.monitor.series import Kind

OWN_PREFIXES = ("host_", "replica_", "service_", "endpoint_", "router_", "portero_")
TARGET_LABELS = ("service", "replica")
COUNTER_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


@dataclass(frozen=True)
class AppSample:
    name: str
    labels: dict[str, str]
    value: float
    kind: Kind


@dataclass(frozen=True)
class ScrapeStatus:
    service: str
    replica: str
    url: str
    at: float
    ok: bool
    series: int
    dropped: int
    duration_s: float
    error: str | None = None


@dataclass(frozen=True)
class Parsed:
    samples: list[AppSample]
    dropped: int  # series over `max_series`


def parse(text: str, service: str, replica: str, max_series: int) -> Parsed:
    """Raises ValueError on text that is not Prometheus' exposition format."""
    samples: list[AppSample] = []
    dropped = 0
    for family in text_string_to_metric_families(text):
        counting = family.type in ("counter", "histogram", "summary", "gaugehistogram")
        for sample in family.samples:
            if sample.name.endswith("_created") or math.isnan(sample.value):
                continue
            if len(samples) >= max_series:
                dropped += 1
                continue
            kind: Kind = "counter" if counting and sample.name.endswith(COUNTER_SUFFIXES) else "gauge"
            labels = {f"exported_{k}" if k in TARGET_LABELS else k: v for k, v in sample.labels.items()}
            samples.append(
                AppSample(_name(sample.name), {**labels, "service": service, "replica": replica}, sample.value, kind)
            )
    return Parsed(samples, dropped)


def _name(name: str) -> str:
    return f"app_{name}" if name.startswith(OWN_PREFIXES) else name
