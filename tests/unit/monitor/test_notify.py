"""Grouping, waits and repeats of notifications, and the Alertmanager v4 payload, on a fake clock."""

from __future__ import annotations

import dataclasses

from portero.monitor.alertmanager import Pusher
from portero.monitor.alerts import Alert, AlertState, fingerprint
from portero.monitor.notify import ZERO_TIME, Dispatcher, group_key, receivers
from portero.spec.models import AlertmanagerSettings, Webhook

T0 = 1_700_000_000.0
HOOK = Webhook(url="http://127.0.0.1:9/hook", group_wait_s=5, group_interval_s=30, repeat_interval_s=600)
(RECEIVER,) = receivers([HOOK])


def alert(replica: str, state: AlertState = AlertState.FIRING, rule: str = "cpu", at: float = T0) -> Alert:
    labels = {"alertname": rule, "severity": "warning", "service": "portal", "replica": replica}
    return Alert(
        rule,
        labels,
        {"summary": f"{replica} is busy", "value": "91"},
        fingerprint(labels),
        state,
        value=91.0,
        active_at=at - 3,
        fired_at=at,
        resolved_at=at + 60 if state is AlertState.RESOLVED else None,
    )


def test_the_payload_has_alertmanagers_v4_shape():
    d = Dispatcher("http://127.0.0.1:9900/")
    assert d.due([RECEIVER], [alert("a"), alert("b")], T0) == []  # group_wait_s
    (sent,) = d.due([RECEIVER], [alert("a"), alert("b")], T0 + 5)
    body = sent.payload
    assert set(body) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "webhook-1"
    assert body["groupKey"] == '{}:{alertname="cpu"}'
    assert body["groupLabels"] == {"alertname": "cpu"}
    assert body["commonLabels"] == {"alertname": "cpu", "severity": "warning", "service": "portal"}
    assert body["commonAnnotations"] == {"value": "91"}
    assert body["externalURL"] == "http://127.0.0.1:9900"
    first = body["alerts"][0]
    assert set(first) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert first["status"] == "firing"
    assert first["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert first["endsAt"] == ZERO_TIME
    assert first["generatorURL"] == "http://127.0.0.1:9900/scalability/monitoring/alerts?rule=cpu"
    assert len(first["fingerprint"]) == 16


def test_group_wait_then_group_interval_then_resolved_once():
    d = Dispatcher("http://x")
    a = alert("a")
    assert d.due([RECEIVER], [a], T0) == []  # waits group_wait_s for company
    b = alert("b", at=T0 + 2)
    (first,) = d.due([RECEIVER], [a, b], T0 + 5)
    assert sorted(x["labels"]["replica"] for x in first.payload["alerts"]) == ["a", "b"]
    a_resolved = dataclasses.replace(a, state=AlertState.RESOLVED, resolved_at=T0 + 10)
    assert d.due([RECEIVER], [a_resolved, b], T0 + 10) == []  # changed, but within group_interval
    (second,) = d.due([RECEIVER], [a_resolved, b], T0 + 35)
    assert second.payload["status"] == "firing"  # b still fires
    statuses = {x["labels"]["replica"]: (x["status"], x["endsAt"]) for x in second.payload["alerts"]}
    assert statuses["a"] == ("resolved", "2023-11-14T22:13:30.000Z")
    assert statuses["b"] == ("firing", ZERO_TIME)
    assert d.due([RECEIVER], [a_resolved, b], T0 + 100) == []  # told already; b unchanged
    b_resolved = dataclasses.replace(b, state=AlertState.RESOLVED, resolved_at=T0 + 120)
    (third,) = d.due([RECEIVER], [a_resolved, b_resolved], T0 + 120)
    assert third.payload["status"] == "resolved"
    assert [x["labels"]["replica"] for x in third.payload["alerts"]] == ["b"]
    assert d.groups == {}  # nothing firing left: the group is over
    assert d.due([RECEIVER], [a_resolved, b_resolved], T0 + 1000) == []


def test_an_unchanged_firing_group_repeats_after_repeat_interval():
    d = Dispatcher("http://x")
    a = alert("a")
    d.due([RECEIVER], [a], T0)
    assert len(d.due([RECEIVER], [a], T0 + 5)) == 1
    assert d.due([RECEIVER], [a], T0 + 5 + 599) == []
    assert len(d.due([RECEIVER], [a], T0 + 5 + 600)) == 1


def test_group_by_splits_and_pending_or_unfired_alerts_are_not_sent():
    hook = HOOK.model_copy(update=dict(group_by=("alertname", "replica"), group_wait_s=0))
    (receiver,) = receivers([hook])
    d = Dispatcher("http://x")
    pending = dataclasses.replace(alert("c"), state=AlertState.PENDING)
    sent = d.due([receiver], [alert("a"), alert("b"), pending], T0)
    assert sorted(n.payload["groupKey"] for n in sent) == [
        '{}:{alertname="cpu",replica="a"}',
        '{}:{alertname="cpu",replica="b"}',
    ]
    assert d.due([receiver], [dataclasses.replace(alert("z"), state=AlertState.RESOLVED)], T0) == []


def test_send_resolved_off_ends_groups_quietly_and_receivers_are_named():
    hook = HOOK.model_copy(update=dict(group_wait_s=0, group_interval_s=0, send_resolved=False, name="pager"))
    (receiver,) = receivers([hook])
    assert receiver.name == "pager"
    d = Dispatcher("http://x")
    a = alert("a")
    assert len(d.due([receiver], [a], T0)) == 1
    assert d.due([receiver], [dataclasses.replace(a, state=AlertState.RESOLVED)], T0 + 1) == []
    assert d.groups == {}


def test_group_keys_are_spelled_like_alertmanagers():
    assert group_key({"alertname": "x", "service": 'a"b'}) == '{}:{alertname="x",service="a\\"b"}'


def test_alertmanager_pushes_new_alerts_at_once_resends_firing_ones_and_tells_each_resolution():
    settings = AlertmanagerSettings(urls=("http://127.0.0.1:9093", "http://127.0.0.1:9094/api/v2/alerts"))
    pusher = Pusher(settings, "http://127.0.0.1:9900")
    assert [r.webhook.url for r in pusher.receivers()] == [
        "http://127.0.0.1:9093/api/v2/alerts",
        "http://127.0.0.1:9094/api/v2/alerts",
    ]
    pending = dataclasses.replace(alert("a"), state=AlertState.PENDING)
    (first,) = pusher.due([alert("a"), pending], T0)
    assert set(first) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert first["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert first["endsAt"] == "2023-11-14T22:17:20.000Z"  # 4 resend intervals ahead
    assert pusher.due([alert("a")], T0 + 59) == []
    (resent,) = pusher.due([alert("a")], T0 + 60)
    assert resent["endsAt"] == "2023-11-14T22:18:20.000Z"
    (ended,) = pusher.due([alert("a", AlertState.RESOLVED)], T0 + 61)  # at once, with its real end
    assert ended["endsAt"] == "2023-11-14T22:14:20.000Z"
    assert pusher.due([alert("a", AlertState.RESOLVED)], T0 + 62) == []
    assert pusher.due([], T0 + 63) == []
    assert pusher.sent == {}  # forgotten with the alert
