"""The deployer's shell: observe ready replicas and each revision's requests, call the strategy, and hand what it
decided (the groups and the traffic split) to the owner of desired state, recording every step.

A deployment runs with the settings it started with (a spec applied meanwhile changes the next one), and it is
the only writer of its service's groups while it runs (`Hold`); its end gives them back (`Release`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable

from portero.dataplane.plane import DataPlane
from portero.deploy import strategy
from portero.deploy.analysis import Window, analyze
from portero.deploy.model import ANALYSED, Deployment, Figures, Observation, Phase, State, Step
from portero.desired import DesiredState, Hold, Release, Rollout
from portero.errors import NotFound, Refused
from portero.events import Event
from portero.replicas import ReplicaState
from portero.router.stats import LatencyHistogram
from portero.spec.models import DeploySettings, StrategyName
from portero.store.base import Store
from portero.supervisor.loop import Supervisor

log = logging.getLogger(__name__)
TICK_S = 0.5
KEEP_DEPLOYMENTS = 50
RESTARTED = "portero restarted during the deployment"


@dataclasses.dataclass
class Tally:
    """Cumulative answers of one revision, as the router counted them."""

    requests: int = 0
    errors: int = 0
    buckets: list[int] = dataclasses.field(default_factory=list)

    def since(self, start: Tally) -> Window:
        histogram = LatencyHistogram()
        if self.buckets:
            base = start.buckets or [0] * len(self.buckets)
            histogram.counts = [a - b for a, b in zip(self.buckets, base, strict=True)]
            histogram.count = sum(histogram.counts)
        return Window(self.requests - start.requests, self.errors - start.errors, histogram.percentile(95))


@dataclasses.dataclass
class Active:
    """A running deployment: its record, the settings it started with, the router's counts when it and its
    phase began (the analysis windows)."""

    deployment: Deployment
    settings: DeploySettings
    start: dict[int, Tally]
    phase: dict[int, Tally]
    phase_waits: list[int]  # the router's queue waits of the service when the phase began
    figures: Figures | None = None  # of the current analysis window, at the last pass


class Deployer:
    def __init__(
        self,
        desired: DesiredState,
        supervisor: Supervisor,
        store: Store,
        plane: DataPlane | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.desired = desired
        self.supervisor = supervisor
        self.store = store
        self.plane = plane
        self.clock = clock
        self._active: dict[str, Active] = {}
        self._revisions: dict[str, dict[str, int]] = {}  # service -> replica id -> revision, of replicas seen
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one step at a time: the loop's, or an abort's

    def running(self, service: str) -> Deployment | None:
        active = self._active.get(service)
        return active.deployment if active is not None else None

    # -- starting and stopping --------------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Deployments cut short by a restart of portero (or the last leader's end) end as aborted; the serving
        revision stays, and the spec file, whose template was not recorded as applied, deploys again."""
        self._active.clear()
        for body in await self.store.get_deployments(limit=KEEP_DEPLOYMENTS):
            d = Deployment.from_dict(body)
            if d.state is State.RUNNING:
                ended = strategy.abort(d, RESTARTED, self.clock())
                await self._save(ended)
                await self._event("deployment.aborted", ended, ended.steps[-1].message)

    def stand_down(self) -> None:
        """Another portero leads: its deployer carries on (it aborts what this one ran, as `recover` does)."""
        self._active.clear()

    async def start(
        self,
        service: str,
        to_revision: int,
        *,
        settings: DeploySettings,
        strategy_name: StrategyName | None,
        kind: str,
        trigger: str,
        file_digest: str = "",
    ) -> Deployment:
        self.refuse_while_running(service)
        record = self.desired.records[service]
        if to_revision == record.revision:
            raise Refused(f"revision {to_revision} already serves {service}")
        now = self.clock()
        d = Deployment(
            id=f"{service}-{int(now)}-{os.urandom(2).hex()}",
            service=service,
            from_revision=record.revision,
            to_revision=to_revision,
            strategy=strategy_name or settings.strategy,
            kind=kind,
            trigger=trigger,
            replicas=max(record.desired, 1),  # a service at zero: the new revision is started once, checked, stopped
            started_at=now,
            old_count=record.desired,
            file_digest=file_digest,
        )
        d = strategy.begin(d, settings, now)
        tallies = self._tallies(service)
        self._active[service] = Active(d, settings, tallies, tallies, self._waits(service))
        await self._save(d)
        message = (
            f"{kind} of {service}: revision {d.from_revision} -> {d.to_revision} ({d.strategy}), asked by {trigger}"
        )
        await self._event("deployment.started", d, message)
        await self._apply(d)
        self._wake.set()
        return d

    def refuse_while_running(self, service: str) -> None:
        running = self.running(service)
        if running is not None:
            raise Refused(
                f"deployment {running.id} of {service} is still running; wait for it to end, or abort it "
                f"(portero deploy {service} --abort)"
            )

    async def abort(self, deployment_id: str, who: str) -> Deployment:
        """Back to the serving revision at once; recorded with who asked."""
        async with self._lock:
            active = next((a for a in self._active.values() if a.deployment.id == deployment_id), None)
            if active is not None:
                d = active.deployment
                return await self._carry_out(d, strategy.abort(d, f"aborted by {who}", self.clock()))
        for body in await self.store.get_deployments(limit=KEEP_DEPLOYMENTS):
            if body["id"] == deployment_id:
                raise Refused(f"deployment {deployment_id} has ended ({body['state']}): nothing to abort")
        raise NotFound("deployment", deployment_id)

    # -- the loop ---------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            if not self.supervisor.acting:
                continue  # another portero leads: its deployer moves the traffic
            for service in list(self._active):
                try:
                    async with self._lock:
                        await self._step(service)
                except Exception:
                    log.exception("deployment of %s: step failed; the next pass tries again", service)

    async def _step(self, service: str) -> None:
        active = self._active.get(service)
        if active is None:
            return  # ended meanwhile (aborted)
        d = active.deployment
        now = self.clock()
        if service not in self.desired.records:  # cannot happen through the spec, which refuses that: a safety net
            following = strategy.abort(d, f"service {service} left the spec", now)
        else:
            following = strategy.advance(d, self._observe(active), active.settings, now)
        if following != d:
            await self._carry_out(d, following)

    async def _carry_out(self, d: Deployment, following: Deployment) -> Deployment:
        """Hand the next record's groups and split over, then record its steps (dated when traffic moved)."""
        active = self._active[d.service]
        if len(following.steps) > len(d.steps) and d.phase in ANALYSED and active.figures is not None:
            following = dataclasses.replace(following, analysis=active.figures)  # the window it was decided on
        if following.phase_started_at != d.phase_started_at:
            active.phase = self._tallies(d.service)  # a new phase: a new analysis window
            active.phase_waits = self._waits(d.service)
        if following.finished:
            del self._active[d.service]
        else:
            active.deployment = following
        if await self._apply(following):  # before any disk write: a switch of traffic must not wait for it
            # Traffic moved: the steps are dated when every router worker routes by them and the revision that
            # lost its traffic answered its last request, not when they were decided.
            held_at = self.clock()
            moved = tuple(Step(held_at, step.message) for step in following.steps[len(d.steps) :])
            following = dataclasses.replace(following, steps=following.steps[: len(d.steps)] + moved)
            if not following.finished:
                active.deployment = following
        if following.finished:
            # Traffic has left the revision that lost it, its last answers are counted (`_moved` waited for
            # them): the record counts every failed request of the new revision, not those up to the verdict.
            failed = self._tallies(d.service).get(following.to_revision, Tally()).errors
            failed -= active.start.get(following.to_revision, Tally()).errors
            following = dataclasses.replace(following, failed_requests=max(failed, following.failed_requests))
        for step in following.steps[len(d.steps) :]:
            await self._event("deployment.step", following, step.message)
        await self._save(following)
        if following.finished:
            await self._finish(following)
        return following

    def _observe(self, active: Active) -> Observation:
        d = active.deployment
        ready = {d.from_revision: 0, d.to_revision: 0}
        unstartable = None
        for replica in self.supervisor.replicas:
            if replica.service != d.service or replica.revision not in ready:
                continue
            if replica.state is ReplicaState.READY:
                ready[replica.revision] += 1
            elif replica.revision == d.to_revision and replica.final_error and replica.last_error:
                unstartable = f"replica {replica.id}: {replica.last_error}"
        tallies = self._tallies(d.service)
        new, old = tallies.get(d.to_revision, Tally()), tallies.get(d.from_revision, Tally())
        errors = new.errors - active.start.get(d.to_revision, Tally()).errors
        verdict = None
        if d.phase in ANALYSED:
            window = new.since(active.phase.get(d.to_revision, Tally()))
            baseline = old.since(active.phase.get(d.from_revision, Tally())) if d.phase is Phase.CANARY else None
            verdict = analyze(window, baseline, active.settings.analysis)
            active.figures = self._figures(active, window)
        return Observation(ready[d.to_revision], ready[d.from_revision], verdict, errors, unstartable)

    def _figures(self, active: Active, window: Window) -> Figures:
        """The window's figures for the record: what the analysis judged, and apart the router's queue (a request
        waits there for any endpoint of the service, so its wait is the service's, not a revision's)."""
        totals = self._waits(active.deployment.service)
        waits = LatencyHistogram()
        if totals:
            base = active.phase_waits or [0] * len(totals)
            waits.counts = [a - b for a, b in zip(totals, base, strict=True)]
            waits.count = sum(waits.counts)
        return Figures(window.requests, window.p95_s, waits.count, waits.percentile(95))

    def _waits(self, service: str) -> list[int]:
        """The router's cumulative queue waits of `service` (histogram buckets), every worker's."""
        return [] if self.plane is None else list(self.plane.link.view.service_totals(service).waits)

    def _tallies(self, service: str) -> dict[int, Tally]:
        """The router's cumulative counts per revision of `service`: every worker's, endpoints that left included
        (the router's view keeps their totals), so that no answer of a revision escapes its analysis."""
        result: dict[int, Tally] = {}
        if self.plane is None:
            return result
        revision_of = {r.id: r.revision for r in self.supervisor.replicas if r.service == service}
        revision_of.update(self._revisions.get(service, {}))
        for record in self.plane.link.view.endpoints.values():
            replica = str((record.gauges or {}).get("replica") or "")
            revision = revision_of.get(replica)
            if record.service != service or revision is None:
                continue
            self._revisions.setdefault(service, {})[replica] = revision  # remembered: the replica may be retired
            tally = result.setdefault(revision, Tally())
            totals = record.totals
            tally.requests += totals.answered + sum(totals.faults)
            tally.errors += totals.errors
            tally.buckets = [
                a + b for a, b in zip(tally.buckets or [0] * len(totals.buckets), totals.buckets, strict=True)
            ]
        return result

    async def _apply(self, d: Deployment) -> bool:
        """The groups and the split to their owner; True when traffic moved."""
        before = self.desired.traffic.get(d.service)
        if d.finished:
            digest = d.file_digest if d.state is State.SUCCEEDED else ""
            await self.desired.apply(Release(d.service, d.id, d.serving_revision, digest))
        else:
            split = None if d.traffic is None else {d.to_revision: d.traffic, d.from_revision: 1.0 - d.traffic}
            held = ((d.from_revision, d.old_count),)
            await self.desired.apply(Hold(d.service, Rollout(d.id, d.to_revision, d.new_count, held, split)))
        if self.desired.traffic.get(d.service) == before:
            return False
        await self._moved(d)
        return True

    async def _moved(self, d: Deployment) -> None:
        """Traffic moved: every router worker routes by the new split before the step is recorded, and a revision
        that lost all its traffic has no request left in flight, so that "switched" means that no request is
        answered by the old revision after it."""
        plane = self.plane
        if plane is None:
            return
        await plane.settle()
        version = plane.table.version
        split = self.desired.traffic.get(d.service)
        serving = d.serving_revision if split is None else None
        emptied = [
            rev for rev in (d.from_revision, d.to_revision) if (split or {}).get(rev, 0.0) == 0.0 and rev != serving
        ]
        replicas = {r.id for r in self.supervisor.replicas if r.service == d.service and r.revision in emptied}

        def quiet() -> bool:
            view = plane.link.view
            if not view.versions or min(view.versions) < version:
                return False  # a report from before every worker had the new split proves nothing
            return not any(
                int((e.gauges or {}).get("in_flight", 0))
                for e in plane.link.view.routed(d.service)
                if (e.gauges or {}).get("replica") in replicas
            )

        if replicas:
            await plane.link.wait(quiet, plane.table.settings.drain_timeout_s)

    async def _finish(self, d: Deployment) -> None:
        kind = {
            State.SUCCEEDED: "deployment.succeeded",
            State.ROLLED_BACK: "deployment.rolled_back",
            State.ABORTED: "deployment.aborted",
        }
        message = d.steps[-1].message if d.steps else d.state.value
        if d.failed_requests:
            message += f"; {d.failed_requests} request(s) failed on revision {d.to_revision}"
        await self._event(kind.get(d.state, "deployment.ended"), d, message)

    async def _save(self, d: Deployment) -> None:
        await self.store.put_deployment(d.service, d.id, d.started_at, d.to_dict())

    async def _event(self, kind: str, d: Deployment, message: str) -> None:
        await self.supervisor.record(Event(kind, d.id, message, d.service, self.clock(), {"deployment": d.id}))
