"""The autoscaler's shell: read each service's signals (router in-flight and queue, the monitor's CPU and
rates), call `decide`, apply the count through the control plane, and keep the decisions for whoever asks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portero.autoscale.decide import Decision, History, Limits, Signals, decide
from portero.control import ControlPlane
from portero.errors import Refused
from portero.events import Event
from portero.monitor.series import series_key
from portero.replicas import ReplicaState
from portero.tasks import spawn

if TYPE_CHECKING:
    from portero.dataplane.plane import DataPlane
    from portero.monitor.monitor import Monitor

log = logging.getLogger(__name__)
KEEP_DECISIONS = 50


@dataclass(frozen=True)
class Record:
    at: float
    service: str
    current: int
    desired: int
    raw: int
    reason: str
    changed: bool
    held: bool
    inputs: dict[str, float]


class Autoscaler:
    def __init__(
        self,
        control: ControlPlane,
        plane: DataPlane | None,
        monitor: Monitor | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self.view = plane.link.view if plane is not None else None
        self.monitor = monitor
        self.clock = clock
        self.history: dict[str, History] = {}
        self.decisions: dict[str, deque[Record]] = {}
        self.signals: dict[str, Signals] = {}
        self.cold_starts: dict[str, list[float]] = {}
        self._waiting_since: dict[str, float] = {}  # the first request that waited at zero replicas
        self._waking: dict[str, float] = {}  # scaled from zero for waiting requests: since when they wait
        self._seen_requests: dict[str, tuple[int, float]] = {}
        self._next: dict[str, float] = {}
        self._wake = asyncio.Event()
        if plane is not None:
            plane.link.on_demand.append(self._demand)

    @property
    def enabled(self) -> bool:
        return self.control.spec.autoscale.enabled

    def _scales(self, name: str) -> bool:
        service = self.control.spec.services.get(name)
        return self.enabled and service is not None and service.managed and service.autoscale.enabled

    def _demand(self, service: str) -> None:
        """A request waits for an endpoint: at zero replicas, decide now rather than at the next tick. Only a wait
        at zero, with the autoscaler on, may become a cold start (a wait on a busy or drained service is none)."""
        record = self.control.records.get(service)
        if record is not None and record.desired == 0 and self._scales(service):
            self._waiting_since.setdefault(service, self.clock())
        self._next[service] = 0.0
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.25)
            self._wake.clear()
            acting = self.control.acting
            for name in self.control.spec.services:
                if not (acting and self._scales(name)):
                    self._forget_waits(name)  # not ours to wake: no cold start will follow
                    continue
                now = self.clock()
                if now < self._next.get(name, 0.0):
                    continue
                self._next[name] = now + self.control.spec.services[name].autoscale.tick_s
                try:
                    await self.tick(name, now)
                except Exception:
                    log.exception("autoscaler pass for %s failed; the next one starts over", name)

    async def tick(self, name: str, now: float) -> Decision | None:
        control = self.control
        if name not in control.records or control.desired.holder(name) is not None:
            return None  # a deployment owns the groups while it runs
        spec = control.spec.services[name]
        current = control.records[name].desired
        signals = self._signals(name, now)
        self.signals[name] = signals
        self._cold_start(name, signals, now)
        thresholds = control.spec.autoscale
        limits = Limits(
            spec.replicas.min, spec.replicas.max, thresholds.scale_up_threshold, thresholds.scale_down_threshold
        )
        decision = decide(current, signals, spec.autoscale, limits, self.history.get(name, History()), now)
        self.history[name] = decision.history
        self._remember(name, current, decision, now)
        if decision.changed:
            try:
                await control.scale(name, decision.desired, reason=f"autoscaler: {decision.reason}", automatic=True)
            except Refused as exc:
                log.warning("autoscaler could not scale %s: %s", name, exc)
                return decision
            if current == 0 and (signals.queued > 0 or name in self._waiting_since):
                self._waking[name] = self._waiting_since.pop(name, now)  # a cold start begins
        return decision

    def _signals(self, name: str, now: float) -> Signals:
        replicas = [r for r in self.control.supervisor.replicas if r.service == name]
        ready = [r for r in replicas if r.state is ReplicaState.READY]
        in_flight = queued = 0
        view = self.view
        routed = view is not None and name in view.services
        if view is not None and routed:
            queued = view.queued(name)
            in_flight = view.in_flight(name) + queued
            total = view.service_totals(name).answered + queued
            seen, at = self._seen_requests.get(name, (-1, now))
            if total != seen:
                self._seen_requests[name] = (total, now)
                at = now
        else:
            at = now
        cpu = rps = None
        snapshot = self.monitor.snapshot if self.monitor is not None else None
        if snapshot is not None:
            ids = {r.id for r in ready}
            readings = [r.cpu_percent for r in snapshot.replicas if r.id in ids and r.cpu_percent is not None]
            cpu = sum(readings) / len(readings) if readings else None
            service = next((s for s in snapshot.services if s.name == name), None)
            if service is not None and service.traffic is not None and service.traffic.requests_per_second is not None:
                rps = service.traffic.requests_per_second / max(len(ready), 1)
        per = max(len(ready), 1)
        custom = self._custom(name, {r.id for r in ready}, now)
        in_flight_per = in_flight / per if routed else None
        return Signals(len(ready), cpu, in_flight_per, rps, None, queued, now - at, custom)

    def _custom(self, name: str, ready: set[str], now: float) -> tuple[tuple[str, float | None], ...]:
        """Each `autoscale.metrics` target's value per ready replica: a replica's matching series added up, then
        averaged over the replicas that have a value (the monitor's series, scraped ones included)."""
        store = self.monitor.store if self.monitor is not None else None
        out: list[tuple[str, float | None]] = []
        for target in self.control.spec.services[name].autoscale.metrics:
            per_replica: dict[str, float] = {}
            for series in store.select(target.metric, {**target.match, "service": name}) if store else []:
                replica = series.labels.get("replica", "")
                value = store.aggregate(series, target.aggregate, target.window_s, now) if store else None
                if replica in ready and value is not None:
                    per_replica[replica] = per_replica.get(replica, 0.0) + value
            value = sum(per_replica.values()) / len(per_replica) if per_replica else None
            out.append((series_key(target.metric, target.match), value))
        return tuple(out)

    def _cold_start(self, name: str, signals: Signals, now: float) -> None:
        """A scale from zero that requests waited for is a cold start once a replica is ready: timed from the first
        request that waited. Fixed: any request that had waited (a drained or busy service, an autoscaler switched
        off) counted, so switching the autoscaler on logged a "cold start" of a minute with nothing scaled."""
        since = self._waking.get(name)
        if since is None:
            if self.control.records[name].desired > 0:
                self._waiting_since.pop(name, None)  # served without a scale from zero
            return
        if signals.ready == 0:
            return
        del self._waking[name]
        took = now - since
        self.cold_starts.setdefault(name, []).append(round(took, 3))
        message = f"cold start: first replica ready {took:.1f} s after the first request waited"
        event = Event("autoscaler.cold_start", name, message, name, now, {"seconds": round(took, 3)})
        spawn(self.control.supervisor.record(event), name=f"cold-start:{name}")

    def _forget_waits(self, name: str) -> None:
        self._waiting_since.pop(name, None)
        self._waking.pop(name, None)

    def _remember(self, name: str, current: int, decision: Decision, now: float) -> None:
        log_ = self.decisions.setdefault(name, deque(maxlen=KEEP_DECISIONS))
        last = log_[-1] if log_ else None
        if not decision.changed and not decision.held:
            return
        if decision.held and last is not None and last.held and last.reason == decision.reason:
            return  # the same refusal again says nothing new
        log_.append(
            Record(
                now,
                name,
                current,
                decision.desired,
                decision.raw,
                decision.reason,
                decision.changed,
                decision.held,
                decision.inputs,
            )
        )
