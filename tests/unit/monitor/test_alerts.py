"""The alert lifecycle as scripted traces on a fake clock: pending, firing, keep_firing_for, resolved."""

from __future__ import annotations

import pytest

from portero.monitor import rules
from portero.monitor.alerts import (
    MAX_SUMMARY_CHARS,
    RESOLVED_KEEP_S,
    TRANSITIONS,
    Alert,
    AlertEvent,
    AlertState,
    AlertTransitionError,
    evaluate,
    fingerprint,
)
from portero.monitor.series import SeriesStore, Tier
from portero.spec.models import AlertRule, AlertSettings, MonitoringSettings

T0 = 1_700_000_000.0
CPU = AlertRule(name="cpu", metric="replica_cpu_percent", threshold=80, for_s=3, keep_firing_for_s=2)


class Trace:
    """Feed one sample per second, evaluate, and keep what changed."""

    def __init__(self, *rules_: AlertRule) -> None:
        self.store = SeriesStore(Tier(1, 3600), Tier(60, 86_400), 16 << 20)
        self.rules = list(rules_)
        self.alerts: dict[str, Alert] = {}
        self.now = T0

    def second(self, **values: float) -> list[tuple[str, str, str]]:
        self.now += 1
        for replica, value in values.items():
            self.store.add("replica_cpu_percent", {"service": "portal", "replica": replica}, value, self.now)
        result = evaluate(self.rules, self.store, self.alerts, self.now)
        self.alerts = result.alerts
        return [(c.alert.labels.get("replica", ""), c.before.value, c.alert.state.value) for c in result.changes]

    def states(self) -> dict[str, str]:
        return {a.labels["replica"]: a.state.value for a in self.alerts.values()}


def test_pending_for_for_s_then_firing_then_kept_then_resolved():
    t = Trace(CPU)
    assert t.second(a=90) == [("a", "inactive", "pending")]
    assert t.second(a=95) == []
    assert t.second(a=95) == []
    assert t.second(a=91) == [("a", "pending", "firing")]  # held for 3 s
    fired = next(iter(t.alerts.values()))
    assert fired.fired_at == t.now
    assert fired.active_at == t.now - 3
    assert t.second(a=10) == []  # keep_firing_for: still firing
    assert t.states() == {"a": "firing"}
    assert t.second(a=10) == [("a", "firing", "resolved")]
    resolved = next(iter(t.alerts.values()))
    assert resolved.resolved_at == t.now
    assert resolved.annotations["summary"].startswith("replica_cpu_percent is 91")  # the last firing value


def test_a_blip_shorter_than_for_s_never_fires():
    t = Trace(CPU)
    assert t.second(a=99) == [("a", "inactive", "pending")]
    assert t.second(a=99) == []
    assert t.second(a=50) == [("a", "pending", "inactive")]
    assert t.alerts == {}


def test_keep_firing_for_bridges_a_short_dip():
    t = Trace(CPU)
    for _ in range(4):
        t.second(a=90)
    assert t.states() == {"a": "firing"}
    assert t.second(a=10) == []
    assert t.second(a=90) == []  # back before keep_firing_for ran out: the same alert, still firing
    assert t.states() == {"a": "firing"}


def test_each_series_is_its_own_alert_and_a_vanished_series_resolves():
    t = Trace(AlertRule(name="cpu", metric="replica_cpu_percent", threshold=80, for_s=0))
    assert sorted(t.second(a=90, b=90, c=10)) == [("a", "inactive", "firing"), ("b", "inactive", "firing")]
    t.store.series.pop('replica_cpu_percent{replica="b",service="portal"}')
    t.store.by_name["replica_cpu_percent"].pop('replica_cpu_percent{replica="b",service="portal"}')
    assert t.second(a=90, c=10) == [("b", "firing", "resolved")]


def test_a_resolved_alert_is_forgotten_after_its_retention_and_can_fire_again():
    t = Trace(AlertRule(name="cpu", metric="replica_cpu_percent", threshold=80, for_s=0))
    t.second(a=90)
    t.second(a=10)
    assert t.states() == {"a": "resolved"}
    assert t.second(a=95) == [("a", "resolved", "firing")]  # for_s 0: pending and firing in one pass
    assert t.second(a=10) == [("a", "firing", "resolved")]
    t.now += RESOLVED_KEEP_S
    assert t.second(a=10) == [("a", "resolved", "inactive")]
    assert t.alerts == {}


def test_labels_fingerprint_and_summary_template():
    rule = AlertRule(
        name="cpu",
        metric="replica_cpu_percent",
        threshold=80,
        for_s=0,
        labels={"team": "ops"},
        summary="{replica} at {value}% ({threshold}) {nope}",
        severity="critical",
    )
    t = Trace(rule)
    t.second(a=90.5)
    alert = next(iter(t.alerts.values()))
    assert alert.labels == {
        "service": "portal",
        "replica": "a",
        "team": "ops",
        "alertname": "cpu",
        "severity": "critical",
    }
    assert alert.fingerprint == fingerprint(alert.labels)
    assert len(alert.fingerprint) == 16
    assert alert.annotations["summary"] == "a at 90.5% (80) {nope}"


def test_ratio_rules_divide_by_the_same_aggregate_of_the_divisor():
    store = SeriesStore(Tier(1, 3600), Tier(60, 86_400), 16 << 20)
    rule = next(r for r in rules.builtin(MonitoringSettings()) if r.name == "error-rate-high")
    rule = rule.model_copy(update={"for_s": 0})
    labels = {"service": "portal"}
    for second in range(10):
        store.add("service_responses_total", labels, 100.0 * second, T0 + second, "counter")
        store.add("service_responses_5xx_total", labels, 10.0 * second, T0 + second, "counter")
    result = evaluate([rule], store, {}, T0 + 9)
    (alert,) = result.alerts.values()
    assert alert.state is AlertState.FIRING
    assert alert.value == pytest.approx(0.1)


def test_the_table_refuses_moves_it_does_not_list():
    alert = Alert("cpu", {}, {}, "f" * 16)
    with pytest.raises(AlertTransitionError, match="event 'quiet' is not allowed in state 'inactive'"):
        alert.transition(AlertEvent.QUIET)
    assert (AlertState.FIRING, AlertEvent.CLEARED) not in TRANSITIONS  # a firing alert waits out keep_firing_for


def test_builtin_rules_follow_the_seed_thresholds_and_spec_rules_replace_them():
    monitoring = MonitoringSettings(alert_threshold_cpu=70, alert_threshold_memory=90)
    names = [r.name for r in rules.builtin(monitoring)]
    assert names == [
        "host-cpu-high",
        "host-memory-high",
        "replica-cpu-high",
        "replica-down",
        "service-unroutable",
        "crash-loop",
        "error-rate-high",
        "store-unreachable",
        "latency-p95-high",
    ]
    by_name = {r.name: r for r in rules.builtin(monitoring)}
    assert by_name["host-cpu-high"].threshold == 70
    assert by_name["host-memory-high"].threshold == 90
    mine = AlertRule(name="host-cpu-high", metric="host_cpu_percent", threshold=99)
    extra = AlertRule(name="mine", metric="host_load1", threshold=4)
    effective = rules.effective(monitoring, AlertSettings(rules=(mine, extra)))
    assert [r.name for r in effective][-1] == "mine"
    assert next(r for r in effective if r.name == "host-cpu-high").threshold == 99
    assert rules.effective(monitoring, AlertSettings(default_rules=False, rules=(extra,))) == [extra]


def test_a_summary_is_bounded_whatever_fills_it():
    """The spec refuses wide formats (test_spec.py); a rule made otherwise, or a huge label from an app's own
    metrics, still gives a bounded summary: it is kept in every event and dashboard answer."""
    rule = AlertRule(name="cpu", metric="replica_cpu_percent", threshold=80, for_s=0)
    wide = rule.model_copy(update={"summary": "{value:>5000} {replica}"})  # past the spec's validation
    t = Trace(wide)
    t.second(a=90.5)
    summary = next(iter(t.alerts.values())).annotations["summary"]
    assert len(summary) == MAX_SUMMARY_CHARS
    assert summary.endswith("…")
    labelled = rule.model_copy(update={"summary": "[{replica}]"})
    t = Trace(labelled)
    t.second(**{"r" * 10_000: 90.5})
    summary = next(iter(t.alerts.values())).annotations["summary"]
    assert summary == "[" + "r" * 199 + "…]"


def test_the_alert_of_a_replica_that_no_longer_exists_resolves_at_once():
    loop = AlertRule(
        name="loop",
        metric="replica_cpu_percent",
        aggregate="max",
        window_s=600,
        threshold=80,
        for_s=0,
        keep_firing_for_s=300,
    )
    t = Trace(loop)
    assert t.second(a=90, b=90) == [("a", "inactive", "firing"), ("b", "inactive", "firing")]
    t.now += 1
    result = evaluate(t.rules, t.store, t.alerts, t.now, replicas={"b"})  # a was retired; its samples remain
    assert [(c.alert.labels["replica"], c.alert.state.value) for c in result.changes] == [("a", "resolved")]
    assert {a.labels["replica"]: a.state.value for a in result.alerts.values()} == {"a": "resolved", "b": "firing"}
