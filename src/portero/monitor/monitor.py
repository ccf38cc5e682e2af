"""The monitor's thin async shell: every `monitoring.interval_s`, collect, record, evaluate, notify.

Everything that decides is elsewhere and pure (series, alerts, notify, traffic); this loop gathers the facts,
feeds them in, and carries out what comes back: events in the store, notifications handed to the senders.
It never waits on a receiver, and a pass that fails is logged and the next one starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from portero.control import ControlPlane
from portero.events import Event
from portero.monitor import alerts as alerting
from portero.monitor import rules
from portero.monitor.alertmanager import Pusher
from portero.monitor.alerts import Alert, AlertState
from portero.monitor.collect import Collector
from portero.monitor.host import HostSampler
from portero.monitor.notify import Dispatcher, Notification, Receiver, receivers
from portero.monitor.record import samples
from portero.monitor.scrape import Scraper
from portero.monitor.series import SeriesStore, Tier
from portero.monitor.snapshot import PorteroSample, Snapshot
from portero.monitor.webhook import Senders
from portero.monitor.window import TrafficWindow
from portero.spec.models import MonitoringSettings, Spec
from portero.tasks import settle, spawn

if TYPE_CHECKING:
    from portero.dataplane.plane import DataPlane

log = logging.getLogger(__name__)
EXPIRE_EVERY = 60  # passes between sweeps for series that aged out


class Monitor:
    def __init__(
        self,
        control: ControlPlane,
        plane: DataPlane | None,
        state_dir: Path,
        external_url: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self.clock = clock
        self.settings: MonitoringSettings = control.spec.monitoring
        series = self.settings.series
        self.store = SeriesStore(
            Tier(series.fine_step_s, series.fine_keep_s),
            Tier(series.coarse_step_s, series.coarse_keep_s),
            series.memory_budget_bytes,
        )
        self.host = HostSampler(state_dir)
        self.collector = Collector(control, plane, self.host)
        self.window = TrafficWindow()
        self.scraper = Scraper(control)
        self.rules = rules.effective(self.settings, control.spec.alerts)
        self.alerts: dict[str, Alert] = {}
        self.receivers: list[Receiver] = receivers(control.spec.alerts.webhooks)
        self.dispatcher = Dispatcher(control.spec.alerts.external_url or external_url)
        self.default_url = external_url
        self.pusher = self._pusher(control.spec)
        self.senders: Senders | None = None
        self.snapshot: Snapshot | None = None
        self.sampled = asyncio.Event()
        self.collect_seconds = 0.0
        self.passes = 0
        self.started_at = clock()
        self._reconfigure = False
        self._task: asyncio.Task[None] | None = None
        # Several porteros on one Redis: each judges alerts, the leader alone tells (events, webhooks), except
        # when Redis is away, when nobody can lead and a duplicate beats silence.
        self.store_up: Callable[[], bool | None] = lambda: None
        self.telling: Callable[[], bool] = lambda: True
        self.told: set[str] = set()  # fingerprints of the alerts this portero recorded firing, not yet resolved
        control.on_applied.append(self.applied)

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def applied(self, spec: Spec) -> None:
        """A new spec: rules, thresholds and receivers change at the next pass; series settings need a restart."""
        if spec.monitoring.series != self.settings.series:
            log.warning("monitoring.series changed: the new retention and budget apply after a restart of portero")
        self.settings = spec.monitoring
        self.rules = rules.effective(spec.monitoring, spec.alerts)
        self.receivers = receivers(spec.alerts.webhooks)
        self.dispatcher.external_url = (spec.alerts.external_url or self.default_url).rstrip("/")
        pusher = self._pusher(spec)
        if pusher is None or self.pusher is None or pusher.settings != self.pusher.settings:
            self.pusher = pusher  # a new one pushes every alert at once: the Alertmanagers may be new ones
        else:
            self.pusher.external_url = pusher.external_url
        self._reconfigure = True

    def _pusher(self, spec: Spec) -> Pusher | None:
        settings = spec.alerts.alertmanager
        url = (spec.alerts.external_url or self.default_url).rstrip("/")
        return None if settings is None else Pusher(settings, url)

    def _senders_receivers(self) -> list[Receiver]:
        return self.receivers + (self.pusher.receivers() if self.pusher is not None else [])

    async def start(self) -> None:
        self.senders = Senders()
        await self.senders.configure(self._senders_receivers())
        self._task = spawn(self.run(), name="monitor", eternal=True)
        state = "on" if self.enabled else "off (monitoring.enabled: false)"
        log.info(
            "monitor %s: every %.2g s, %d rule(s), %d receiver(s)",
            state,
            self.settings.interval_s,
            len(self.rules),
            len(self._senders_receivers()),
        )

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._task is not None:
            settle(self._task)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.senders is not None:
            await self.senders.close(grace_s)
        await self.scraper.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if self._reconfigure and self.senders is not None:
                self._reconfigure = False
                await self.senders.configure(self._senders_receivers())
            if self.enabled:
                try:
                    await self.tick()
                except Exception:
                    log.exception("monitor pass failed; the next pass starts over")
            elif self.snapshot is not None or self.alerts:
                self._switch_off()
            next_at += self.settings.interval_s
            delay = next_at - loop.time()
            if delay < 0:  # a pass took longer than the interval: skip the missed ones rather than catch up
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    async def tick(self) -> None:
        began = time.perf_counter()
        now = self.clock()
        deadline_s = max(1.0, 2 * self.settings.interval_s)
        scraped = self.scraper.poll(now)
        (host, (cpu, rss)), replicas = await asyncio.gather(
            self.collector.host_and_self(now), self.collector.replicas(now, deadline_s)
        )
        services, router = self.collector.services(now)
        services = self.window.services(services, now)
        store = self.store
        portero = PorteroSample(
            cpu_percent=cpu,
            memory_bytes=rss,
            uptime_s=round(now - self.started_at, 1),
            collect_seconds=self.collect_seconds,
            series=len(store.series),
            series_memory_bytes=store.nbytes(),
            series_budget_bytes=store.budget_bytes,
            store_up=self.store_up(),
        )
        scrapes = sorted(self.scraper.status.values(), key=lambda s: (s.service, s.replica))
        app = [sample for replica in sorted(self.scraper.latest) for sample in self.scraper.latest[replica]]
        certificates, handshakes = self.collector.certificates()
        snapshot = Snapshot(
            now, self.settings.interval_s, host, replicas, services, router, portero, scrapes, app, certificates,
            handshakes,
        )  # fmt: skip
        for name, labels, value, kind in samples(snapshot):
            store.add(name, labels, value, now, kind)
        for result in scraped:  # only fresh scrapes: a sample is recorded once, when it was read
            for sample in result.samples:
                store.add(sample.name, sample.labels, sample.value, now, sample.kind)
        self.passes += 1
        if self.passes % EXPIRE_EVERY == 0:
            store.expire(now)
        self.snapshot = snapshot
        self.sampled.set()
        await self.evaluate(now, {replica.id for replica in replicas})
        self.collect_seconds = time.perf_counter() - began

    async def evaluate(self, now: float, replicas: set[str] | None = None) -> None:
        result = alerting.evaluate(self.rules, self.store, self.alerts, now, replicas)
        self.alerts = result.alerts
        telling = self.telling() or self.store_up() is False
        for change in result.changes:
            if telling or change.alert.fingerprint in self.told:
                await self._tell(change.alert, change.before, now)
        self.told &= set(self.alerts)  # forgotten alerts
        # A portero that told an alert firing tells its end too, leader or not: Redis may be back (nobody
        # "must" tell then) before anyone leads again, and a firing without its resolution is a lie.
        shown = self.alerts.values() if telling else [a for a in self.alerts.values() if a.fingerprint in self.told]
        if self.senders is not None:
            for notification in self.dispatcher.due(self.receivers, shown, now):
                self.senders.submit(notification)
            if self.pusher is not None and (pushed := self.pusher.due(shown, now)):
                for receiver in self.pusher.receivers():
                    self.senders.submit(Notification(receiver, pushed))

    async def _tell(self, alert: Alert, before: AlertState, now: float) -> None:
        summary = alert.annotations.get("summary", alert.rule)
        extra = {"alert": alert.rule, "fingerprint": alert.fingerprint}
        if alert.state is AlertState.PENDING or (alert.state is AlertState.INACTIVE and before is AlertState.PENDING):
            log.info("alert %s %s: %s", alert.rule, alert.state.value, summary, extra=extra)
            return
        if alert.state not in (AlertState.FIRING, AlertState.RESOLVED):
            return
        if alert.state is AlertState.FIRING:
            self.told.add(alert.fingerprint)
        else:
            self.told.discard(alert.fingerprint)
        data = {"labels": alert.labels, "fingerprint": alert.fingerprint, "value": alert.value}
        kind = f"alert.{alert.state.value}"
        await self.control.supervisor.record(Event(kind, alert.rule, summary, alert.labels.get("service"), now, data))

    def _switch_off(self) -> None:
        log.info("monitoring switched off: samples and alerts cleared (series kept until they age out)")
        self.snapshot = None
        self.sampled.clear()
        self.alerts = {}
        self.dispatcher.groups.clear()

    def active(self) -> list[Alert]:
        """Pending and firing alerts, firing first."""
        shown = [a for a in self.alerts.values() if a.state in (AlertState.PENDING, AlertState.FIRING)]
        return sorted(shown, key=lambda a: (a.state is not AlertState.FIRING, a.rule, a.fingerprint))
