"""The built-in alert rules, and the effective rule set: built-ins (from the seed's thresholds) plus the spec's.

Pure: a spec in, rules out.
"""

from __future__ import annotations

from portero.spec.models import AlertRule, AlertSettings, MonitoringSettings

# The built-ins that no setting changes.
THRESHOLD_FREE = (
    AlertRule(
        name="replica-down",
        metric="service_missing_replicas",
        threshold=0,
        for_s=60,
        severity="critical",
        summary="{service} has {value} replica(s) fewer ready than desired",
    ),
    AlertRule(
        name="service-unroutable",
        metric="service_unroutable",
        threshold=0,
        for_s=0,
        severity="critical",
        summary="{service}: no endpoint takes requests (all draining or at weight 0); every request waits, then "
        "gets 503 (`portero undrain`)",
    ),
    AlertRule(
        name="crash-loop",
        metric="replica_restarts_total",
        aggregate="increase",
        window_s=600,
        op=">=",
        threshold=3,
        for_s=0,
        keep_firing_for_s=300,
        severity="critical",
        summary="replica {replica} of {service} restarted {value} times in 10 minutes",
    ),
    AlertRule(
        name="error-rate-high",
        metric="service_responses_5xx_total",
        aggregate="increase",
        window_s=60,
        per="service_responses_total",
        threshold=0.05,
        for_s=60,
        severity="critical",
        summary="{service} answers {value} of its requests with 5xx (threshold {threshold})",
    ),
    AlertRule(
        name="store-unreachable",
        metric="portero_store_up",
        op="<",
        threshold=1,
        for_s=0,
        severity="critical",
        summary="Redis (store.redis_url) does not answer: routing goes on, controllers are paused",
    ),
    AlertRule(
        name="latency-p95-high",
        metric="service_latency_p95_seconds",
        aggregate="avg",
        window_s=60,
        threshold=1.0,
        for_s=60,
        summary="{service} p95 latency {value} s (threshold {threshold} s)",
    ),
)


def builtin(monitoring: MonitoringSettings) -> list[AlertRule]:
    cpu, memory = monitoring.alert_threshold_cpu, monitoring.alert_threshold_memory
    return [
        AlertRule(
            name="host-cpu-high",
            metric="host_cpu_percent",
            aggregate="avg",
            window_s=60,
            threshold=cpu,
            for_s=60,
            summary="host CPU at {value}% over the last minute (threshold {threshold}%, ALERT_THRESHOLD_CPU)",
        ),
        AlertRule(
            name="host-memory-high",
            metric="host_memory_percent",
            aggregate="avg",
            window_s=60,
            threshold=memory,
            for_s=60,
            summary="host memory at {value}% (threshold {threshold}%, ALERT_THRESHOLD_MEMORY)",
        ),
        AlertRule(
            name="replica-cpu-high",
            metric="replica_cpu_percent",
            aggregate="avg",
            window_s=60,
            threshold=cpu,
            for_s=60,
            summary="replica {replica} of {service} uses {value}% of a core (threshold {threshold}%)",
        ),
        *THRESHOLD_FREE,
    ]


def effective(monitoring: MonitoringSettings, alerts: AlertSettings) -> list[AlertRule]:
    """Built-ins first (unless `alerts.default_rules` is off), each replaced by a spec rule of its name."""
    mine = {rule.name: rule for rule in alerts.rules}
    rules = [mine.pop(rule.name, rule) for rule in builtin(monitoring)] if alerts.default_rules else []
    return rules + [rule for rule in alerts.rules if rule.name in mine]
