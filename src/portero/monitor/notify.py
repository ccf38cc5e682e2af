"""Who is told what, and when: Alertmanager's grouping, waits and repeats, and its webhook payload (version 4).

Theory of operation: for each receiver, firing and just-resolved alerts are put in groups by the values of the
receiver's `group_by` labels. A new group is sent once it has waited `group_wait_s` (so that alerts raised
together go out together); a group whose alerts changed (one more firing, one resolved) is sent again no sooner
than `group_interval_s` after its previous notification; an unchanged group that still fires is sent again
every `repeat_interval_s`. A notification carries every alert of its group, firing and resolved; a group with
nothing firing left is forgotten once its resolved alerts were sent. The payload is Alertmanager's, so a
receiver written for Alertmanager (a chat bridge, an incident tool) works unchanged.

Pure: `Dispatcher` is fed the alerts and `now`, and returns the notifications to deliver; it never sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from portero.monitor.alerts import Alert, AlertState
from portero.spec.models import Webhook

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


@dataclass(frozen=True)
class Receiver:
    name: str
    webhook: Webhook


def receivers(webhooks: Iterable[Webhook]) -> list[Receiver]:
    return [Receiver(hook.name or f"webhook-{index}", hook) for index, hook in enumerate(webhooks, 1)]


@dataclass(frozen=True)
class Notification:
    receiver: Receiver
    payload: dict[str, Any] | list[dict[str, Any]]  # a webhook's body; a list: alerts for Alertmanager's API

    def describe(self) -> str:
        if isinstance(self.payload, list):
            return f"of {len(self.payload)} alert(s)"
        return f"{self.payload.get('groupKey')} ({self.payload.get('status')})"


@dataclass
class Group:
    labels: dict[str, str]
    first_seen_at: float
    last_sent_at: float | None = None
    sent: dict[str, AlertState] = field(default_factory=dict)  # fingerprint -> status it was last sent with


class Dispatcher:
    def __init__(self, external_url: str) -> None:
        self.external_url = external_url.rstrip("/")
        self.groups: dict[tuple[str, str], Group] = {}

    def due(self, receivers: Iterable[Receiver], alerts: Iterable[Alert], now: float) -> list[Notification]:
        shown = [a for a in alerts if a.state in (AlertState.FIRING, AlertState.RESOLVED)]
        out: list[Notification] = []
        names = set()
        for receiver in receivers:
            names.add(receiver.name)
            out += self._receiver(receiver, shown, now)
        self.groups = {k: g for k, g in self.groups.items() if k[0] in names}  # a removed receiver's groups go
        return out

    def _receiver(self, receiver: Receiver, alerts: list[Alert], now: float) -> list[Notification]:
        hook = receiver.webhook
        grouped: dict[str, list[Alert]] = {}
        labels_of: dict[str, dict[str, str]] = {}
        for alert in alerts:
            if alert.state is AlertState.RESOLVED and not hook.send_resolved:
                continue
            labels = {name: alert.labels.get(name, "") for name in hook.group_by}
            key = group_key(labels)
            grouped.setdefault(key, []).append(alert)
            labels_of[key] = labels
        out: list[Notification] = []
        for key in set(grouped) | {k for r, k in self.groups if r == receiver.name}:
            members = grouped.get(key, [])
            group = self.groups.get((receiver.name, key))
            if group is None:
                if not any(a.state is AlertState.FIRING for a in members):
                    continue  # resolved before it was ever told: nothing to say
                group = self.groups[(receiver.name, key)] = Group(labels_of[key], now)
            notification = self._group(receiver, key, group, members, now)
            if notification is not None:
                out.append(notification)
            if not group.sent and not any(a.state is AlertState.FIRING for a in members):
                del self.groups[(receiver.name, key)]  # told it resolved, or it never fired long enough to tell
        return out

    def _group(
        self, receiver: Receiver, key: str, group: Group, members: list[Alert], now: float
    ) -> Notification | None:
        hook = receiver.webhook
        current = {
            a.fingerprint: a
            for a in members
            if a.state is AlertState.FIRING or a.fingerprint in group.sent  # resolved: only if it was told firing
        }
        status = {fp: a.state for fp, a in current.items()}
        firing = any(s is AlertState.FIRING for s in status.values())
        if group.last_sent_at is None:
            due = firing and now - group.first_seen_at >= hook.group_wait_s
        elif status != group.sent:
            due = now - group.last_sent_at >= hook.group_interval_s
        else:
            due = firing and now - group.last_sent_at >= hook.repeat_interval_s
        if not due:
            return None
        group.last_sent_at = now
        group.sent = {fp: s for fp, s in status.items() if s is AlertState.FIRING}
        if not current:
            return None  # every alert vanished unresolved (send_resolved off): the group ends quietly
        ordered = sorted(current.values(), key=lambda a: (a.state is not AlertState.FIRING, a.fingerprint))
        return Notification(receiver, payload(receiver.name, key, group.labels, ordered, self.external_url))


def group_key(labels: Mapping[str, str]) -> str:
    """Alertmanager's spelling: `{}:{alertname="host-cpu-high"}` (the route's matchers, then the group's labels)."""
    inner = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return "{}:{" + inner + "}"


def payload(
    receiver: str, key: str, group_labels: Mapping[str, str], alerts: list[Alert], external_url: str
) -> dict[str, Any]:
    """The Alertmanager webhook body, version 4."""
    firing = any(a.state is AlertState.FIRING for a in alerts)
    return {
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": dict(group_labels),
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": [_alert(a, external_url) for a in alerts],
    }


def _alert(alert: Alert, external_url: str) -> dict[str, Any]:
    resolved = alert.state is AlertState.RESOLVED
    return {
        "status": "resolved" if resolved else "firing",
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.fired_at or alert.active_at or 0.0),
        "endsAt": rfc3339(alert.resolved_at) if resolved and alert.resolved_at is not None else ZERO_TIME,
        "generatorURL": f"{external_url}/scalability/monitoring/alerts?rule={quote(alert.rule)}",
        "fingerprint": alert.fingerprint,
    }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
