"""Alert rules judged over the metric series, and the alert lifecycle as one table (Prometheus' semantics).

Theory of operation: on every evaluation each rule reads every series of its metric that matches its labels,
aggregates the samples of its window into one value, and compares it with its threshold. Each (rule, series)
pair is one alert, named by its labels and identified by their fingerprint. An alert whose condition holds
becomes *pending*; when it has held for `for_s` it is *firing*; once the condition has been clear for
`keep_firing_for_s` it is *resolved* (a pending one whose condition clears simply goes back to *inactive*,
unannounced). A resolved alert is remembered for `RESOLVED_KEEP_S` so that receivers can be told, then
forgotten; if its condition returns before that, it starts over as pending. A series that vanished counts as a
clear condition, and so does one labelled with a replica that no longer exists (scaled down, replaced by a
deployment): its samples stay in the store until they age out, but nothing they say can be acted on, so its
alerts resolve at once instead of after the rule's window and `keep_firing_for_s` (a crash loop's 15 minutes).

Pure: facts (the series store) and `now` in, the new alerts and their changes out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from portero.monitor.series import Series, SeriesStore
from portero.spec.models import AlertRule

RESOLVED_KEEP_S = 900.0  # Prometheus keeps resolved alerts 15 minutes for the notifier
MAX_SUMMARY_CHARS = 1_000  # a summary is kept in events, sent to receivers and shown: whatever fills it, bounded
MAX_LABEL_CHARS = 200  # of one label value in a summary


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertEvent(StrEnum):
    MET = "met"  # the condition holds (first time, or again)
    HELD = "held"  # it has held for `for_s`
    CLEARED = "cleared"  # it no longer holds (a pending alert drops)
    QUIET = "quiet"  # it has been clear for `keep_firing_for_s` (a firing alert resolves)


S, E = AlertState, AlertEvent
TRANSITIONS: dict[tuple[AlertState, AlertEvent], AlertState] = {
    (S.INACTIVE, E.MET): S.PENDING,
    (S.PENDING, E.HELD): S.FIRING,
    (S.PENDING, E.CLEARED): S.INACTIVE,
    (S.FIRING, E.QUIET): S.RESOLVED,
    (S.RESOLVED, E.MET): S.PENDING,
}
del S, E

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class AlertTransitionError(RuntimeError):
    def __init__(self, alert: str, state: AlertState, event: AlertEvent) -> None:
        super().__init__(f"alert {alert}: event {event.value!r} is not allowed in state {state.value!r}")


@dataclass(frozen=True)
class Alert:
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    state: AlertState = AlertState.INACTIVE
    value: float | None = None
    active_at: float | None = None  # when the condition began to hold (pending from then)
    fired_at: float | None = None
    last_met_at: float | None = None
    resolved_at: float | None = None

    def transition(self, event: AlertEvent, **changes: object) -> Alert:
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise AlertTransitionError(f"{self.rule} {self.fingerprint}", self.state, event)
        return dataclasses.replace(self, state=target, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Change:
    alert: Alert
    before: AlertState


@dataclass
class Evaluation:
    alerts: dict[str, Alert]
    changes: list[Change] = field(default_factory=list)


def fingerprint(labels: Mapping[str, str]) -> str:
    blob = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def measure(rule: AlertRule, series: Series, store: SeriesStore, now: float) -> float | None:
    """The rule's value for one series; None without enough data (or a zero divisor)."""
    value = store.aggregate(series, rule.aggregate, rule.window_s, now)
    if value is None or rule.per is None:
        return value
    divisor_series = store.get(rule.per, series.labels)
    if divisor_series is None:
        return None
    divisor = store.aggregate(divisor_series, rule.aggregate, rule.window_s, now)
    return value / divisor if divisor else None


def evaluate(
    rules: Iterable[AlertRule],
    store: SeriesStore,
    alerts: Mapping[str, Alert],
    now: float,
    replicas: Container[str] | None = None,
) -> Evaluation:
    """`replicas`: the ids of the replicas that exist (None: all do); a series of another replica is gone."""
    result = Evaluation(alerts={})
    seen: set[str] = set()
    for rule in rules:
        compare = COMPARE[rule.op]
        for series in store.select(rule.metric, rule.match):
            replica = series.labels.get("replica")
            if replica is not None and replicas is not None and replica not in replicas:
                continue
            value = measure(rule, series, store, now)
            labels = {**series.labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}
            key = fingerprint(labels)
            seen.add(key)
            before = alerts.get(key) or Alert(rule.name, labels, {}, key)
            met = value is not None and compare(value, rule.threshold)
            after = step(before, rule, value, now, met=met)
            _keep(result, before, after)
    for key, alert in alerts.items():  # series gone, or rule removed: the condition no longer holds
        if key not in seen:
            _keep(result, alert, _vanished(alert, now))
    return result


def _keep(result: Evaluation, before: Alert, after: Alert) -> None:
    if after.state is not before.state:
        result.changes.append(Change(after, before.state))
    if after.state is not AlertState.INACTIVE:
        result.alerts[after.fingerprint] = after


def step(alert: Alert, rule: AlertRule, value: float | None, now: float, *, met: bool) -> Alert:
    """One evaluation of one alert: the table's moves that the facts call for, in order."""
    annotations = _annotations(rule, alert.labels, value) if met or alert.state is not AlertState.FIRING else None
    current = dataclasses.replace(alert, value=value, annotations=annotations or alert.annotations)
    if met:
        if current.state in (AlertState.INACTIVE, AlertState.RESOLVED):
            current = current.transition(AlertEvent.MET, active_at=now, fired_at=None, resolved_at=None)
        current = dataclasses.replace(current, last_met_at=now)
        if current.state is AlertState.PENDING and now - (current.active_at or now) >= rule.for_s:
            current = current.transition(AlertEvent.HELD, fired_at=now)
        return current
    if current.state is AlertState.PENDING:
        return current.transition(AlertEvent.CLEARED, active_at=None)
    if current.state is AlertState.FIRING and now - (current.last_met_at or now) >= rule.keep_firing_for_s:
        return current.transition(AlertEvent.QUIET, resolved_at=now)
    if current.state is AlertState.RESOLVED and now - (current.resolved_at or now) >= RESOLVED_KEEP_S:
        return dataclasses.replace(current, state=AlertState.INACTIVE)  # forgotten: not a state change to tell
    return current


def _vanished(alert: Alert, now: float) -> Alert:
    if alert.state is AlertState.PENDING:
        return alert.transition(AlertEvent.CLEARED, active_at=None)
    if alert.state is AlertState.FIRING:
        return alert.transition(AlertEvent.QUIET, resolved_at=now, value=None)
    if alert.state is AlertState.RESOLVED and now - (alert.resolved_at or now) >= RESOLVED_KEEP_S:
        return dataclasses.replace(alert, state=AlertState.INACTIVE)
    return alert


def _annotations(rule: AlertRule, labels: Mapping[str, str], value: float | None) -> dict[str, str]:
    shown = "none" if value is None else f"{value:.4g}"
    aggregate = "" if rule.aggregate == "last" else f" ({rule.aggregate} over {rule.window_s:g} s)"
    subject = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
    summary = f"{rule.metric}{aggregate} is {shown}, {rule.op} {rule.threshold:g}" + (
        f" ({subject})" if subject else ""
    )
    if rule.summary is not None:
        # A label's value may come from an app's own metrics: each is cut before it fills a placeholder.
        fields = _Fields({k: _cut(v, MAX_LABEL_CHARS) for k, v in labels.items()})
        fields |= {"value": shown, "threshold": f"{rule.threshold:g}"}
        try:
            summary = rule.summary.format_map(fields)
        except (ValueError, IndexError, KeyError, AttributeError):
            summary = rule.summary  # a format the rule's author got wrong is shown as written
    return {"summary": _cut(summary), "value": shown, "threshold": f"{rule.op} {rule.threshold:g}"}


def _cut(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"  # a placeholder naming no label stays as written
