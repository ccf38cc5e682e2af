"""Alerts pushed to Alertmanager's API v2 (`POST /api/v2/alerts`), as Prometheus' notifier pushes them.

Theory of operation: Alertmanager holds an alert active until its `endsAt`, and does the grouping, silencing,
inhibition and routing itself; the sender's job is only to keep it told. So a firing alert is pushed when it
fires and again every `resend_interval_s`, each time with `endsAt` four resend intervals ahead: were portero to
stop pushing (killed, cut off), Alertmanager would resolve the alert by itself after that. A resolved alert is
pushed with its real end at once, then again every resend interval while portero remembers it
(`RESOLVED_KEEP_S`), so an Alertmanager that missed a push still hears of it. Pending alerts are not pushed. The
alerts due at one evaluation go out in one body; every Alertmanager gets the same bodies (a cluster of them
deduplicates). Rejected: sending the webhook payload (version 4) there; that is what Alertmanager sends, not what
it takes, and every such POST got a 400.

Pure: alerts and `now` in, the bodies to push out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from portero.monitor.alerts import Alert, AlertState
from portero.monitor.notify import Receiver, rfc3339
from portero.spec.models import AlertmanagerSettings, Webhook

VALID_FOR_RESENDS = 4  # Prometheus: endsAt = now + 4 x max(resend delay, evaluation interval)


@dataclass
class Pusher:
    settings: AlertmanagerSettings
    external_url: str
    sent: dict[str, tuple[AlertState, float]] = field(default_factory=dict)  # fingerprint -> state, when pushed

    def receivers(self) -> list[Receiver]:
        """One sender per Alertmanager (the webhook senders' queue, retries and backoff)."""
        settings = self.settings
        return [
            Receiver(
                f"alertmanager-{index}",
                Webhook(url=url, timeout_s=settings.timeout_s, max_attempts=settings.max_attempts),
            )
            for index, url in enumerate(settings.endpoints, 1)
        ]

    def due(self, alerts: Iterable[Alert], now: float) -> list[dict[str, Any]]:
        """The alerts to push now: new firing or resolved ones, and those pushed a resend interval ago."""
        body: list[dict[str, Any]] = []
        known: dict[str, tuple[AlertState, float]] = {}
        for alert in alerts:
            if alert.state not in (AlertState.FIRING, AlertState.RESOLVED):
                continue
            last = self.sent.get(alert.fingerprint)
            if last is None or last[0] is not alert.state or now - last[1] >= self.settings.resend_interval_s:
                body.append(self.postable(alert, now))
                last = (alert.state, now)
            known[alert.fingerprint] = last
        self.sent = known  # an alert portero forgot (resolved long ago) is forgotten here too
        return body

    def postable(self, alert: Alert, now: float) -> dict[str, Any]:
        """One `postableAlert` of the API v2."""
        resolved = alert.state is AlertState.RESOLVED and alert.resolved_at is not None
        ends = alert.resolved_at if resolved else now + VALID_FOR_RESENDS * self.settings.resend_interval_s
        return {
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "startsAt": rfc3339(alert.fired_at or alert.active_at or now),
            "endsAt": rfc3339(ends or now),
            "generatorURL": f"{self.external_url}/scalability/monitoring/alerts?rule={quote(alert.rule)}",
        }
