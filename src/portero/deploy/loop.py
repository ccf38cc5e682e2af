"""The deployer's shell: observe ready replicas and each revision's requests, call the strategy, and carry out
what it decided (group sizes to the supervisor, the traffic split to the router), recording every step."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from portero.deploy import strategy
from portero.deploy.analysis import Window, analyze
from portero.deploy.model import Deployment, Observation, Phase, State, Step
from portero.events import Event
from portero.replicas import ReplicaState
from portero.router.stats import LatencyHistogram
from portero.spec.models import DeploySettings

if TYPE_CHECKING:
    from portero.control import ControlPlane
    from portero.dataplane.plane import DataPlane

log = logging.getLogger(__name__)
TICK_S = 0.5
KEEP_DEPLOYMENTS = 50


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


class Deployer:
    def __init__(self, control: ControlPlane, plane: DataPlane | None) -> None:
        self.control = control
        self.plane = plane
        self.active: dict[str, Deployment] = {}
        self._marks: dict[str, tuple[dict[int, Tally], dict[int, Tally]]] = {}  # deployment id -> (start, phase)
        self.on_traffic: list[Callable[[], None]] = []  # the data plane re-weights endpoints
        self._revisions: dict[str, dict[str, int]] = {}  # service -> replica id -> revision, of replicas seen
        self._wake = asyncio.Event()

    def settings(self, service: str) -> DeploySettings:
        spec = self.control.spec
        own = spec.services[service].deploy if service in spec.services else None
        return own or spec.deploy

    # -- starting ---------------------------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Deployments cut short by a restart of portero end as aborted; the serving revision stays."""
        for body in await self.control.store.get_deployments(limit=KEEP_DEPLOYMENTS):
            d = Deployment.from_dict(body)
            if d.state is State.RUNNING:
                now = self.control.clock()
                ended = d.note(
                    "portero restarted during the deployment; the old revision was kept",
                    now,
                    state=State.ABORTED,
                    phase=Phase.DONE,
                    finished_at=now,
                )
                await self._save(ended)
                await self._event("deployment.aborted", ended, ended.steps[-1].message)

    async def start(
        self, service: str, to_revision: int, *, strategy_name: str | None, kind: str, trigger: str
    ) -> Deployment:
        from portero.control import Refused

        running = self.active.get(service)
        if running is not None:
            raise Refused(f"deployment {running.id} of {service} is still running; wait for it or roll back")
        record = self.control.records[service]
        if to_revision == record.revision:
            raise Refused(f"revision {to_revision} already serves {service}")
        settings = self.settings(service)
        now = self.control.clock()
        d = Deployment(
            id=f"{service}-{int(now)}-{os.urandom(2).hex()}",
            service=service,
            from_revision=record.revision,
            to_revision=to_revision,
            strategy=strategy_name or settings.strategy,
            kind=kind,
            trigger=trigger,
            replicas=max(record.desired, 1),
            started_at=now,
        )
        d = strategy.begin(d, settings, now)
        tallies = self._tallies(service)
        self._marks[d.id] = (tallies, tallies)
        self.active[service] = d
        await self._save(d)
        await self._event(
            "deployment.started",
            d,
            f"{kind} of {service}: revision {d.from_revision} -> {d.to_revision} ({d.strategy}), asked by {trigger}",
        )
        await self._apply(d)
        self._wake.set()
        return d

    # -- the loop ---------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            if not self.control.acting:
                continue  # another portero leads: its deployer moves the traffic
            for service, d in list(self.active.items()):
                try:
                    await self._step(service, d)
                except Exception:
                    log.exception("deployment %s: step failed; the next pass tries again", d.id)

    async def _step(self, service: str, d: Deployment) -> None:
        now = self.control.clock()
        settings = self.settings(service)
        following = strategy.advance(d, self._observe(d, settings), settings, now)
        if following == d:
            return
        start, _ = self._marks[d.id]
        if following.phase_started_at != d.phase_started_at:
            self._marks[d.id] = (start, self._tallies(service))  # a new phase: a new analysis window
        if following.finished:
            self._settle(following)
        else:
            self.active[service] = following
        if await self._apply(following):  # before any disk write: a switch of traffic must not wait for it
            # Traffic moved: the steps are dated when every router worker routes by them and the revision that
            # lost its traffic answered its last request, not when they were decided.
            held_at = self.control.clock()
            moved = tuple(Step(held_at, step.message) for step in following.steps[len(d.steps) :])
            following = dataclasses.replace(following, steps=following.steps[: len(d.steps)] + moved)
            if not following.finished:
                self.active[service] = following
        if following.finished:
            # Traffic has left the revision that lost it, its last answers are counted (`_moved` waited for
            # them): the record counts every failed request of the new revision, not those up to the verdict.
            failed = self._tallies(service).get(following.to_revision, Tally()).errors
            failed -= start.get(following.to_revision, Tally()).errors
            following = dataclasses.replace(following, failed_requests=max(failed, following.failed_requests))
        for step in following.steps[len(d.steps) :]:
            await self._event("deployment.step", following, step.message)
        await self._save(following)
        if following.finished:
            await self._finish(following)

    def _observe(self, d: Deployment, settings: DeploySettings) -> Observation:
        ready = {d.from_revision: 0, d.to_revision: 0}
        for replica in self.control.supervisor.replicas:
            if replica.service == d.service and replica.state is ReplicaState.READY and replica.revision in ready:
                ready[replica.revision] += 1
        tallies = self._tallies(d.service)
        start, phase = self._marks[d.id]
        new, old = tallies.get(d.to_revision, Tally()), tallies.get(d.from_revision, Tally())
        errors = new.errors - start.get(d.to_revision, Tally()).errors
        verdict = None
        if d.phase in (Phase.ROLLING, Phase.CANARY, Phase.SWITCHED):
            window = new.since(phase.get(d.to_revision, Tally()))
            baseline = old.since(phase.get(d.from_revision, Tally())) if d.phase is Phase.CANARY else None
            verdict = analyze(window, baseline, settings.analysis)
        return Observation(ready[d.to_revision], ready[d.from_revision], verdict, errors)

    def _tallies(self, service: str) -> dict[int, Tally]:
        """The router's cumulative counts per revision of `service`: every worker's, endpoints that left included
        (the router's view keeps their totals), so that no answer of a revision escapes its analysis."""
        result: dict[int, Tally] = {}
        if self.plane is None:
            return result
        revision_of = {r.id: r.revision for r in self.control.supervisor.replicas if r.service == service}
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
        """Group sizes to the supervisor, traffic split to the router; True when traffic moved."""
        control = self.control
        held: tuple[tuple[int, int], ...]
        if d.finished:
            primary, count, held = d.serving_revision, d.replicas, ()
        else:
            primary, count, held = d.to_revision, d.new_count, ((d.from_revision, d.old_count),)
        async with control.supervisor.lock:
            want = control.supervisor.desired.get(d.service)
            if want is not None:
                control.supervisor.desired[d.service] = dataclasses.replace(
                    want, revision=primary, replicas=count, held=held
                )
        before = control.traffic.get(d.service)
        if d.finished or d.traffic is None:
            control.traffic.pop(d.service, None)
        else:
            control.traffic[d.service] = {d.to_revision: d.traffic, d.from_revision: 1.0 - d.traffic}
        for hook in self.on_traffic:
            hook()
        control.supervisor.wake()
        if control.traffic.get(d.service) == before:
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
        split = self.control.traffic.get(d.service)
        serving = d.serving_revision if split is None else None
        emptied = [
            rev for rev in (d.from_revision, d.to_revision) if (split or {}).get(rev, 0.0) == 0.0 and rev != serving
        ]
        replicas = {r.id for r in self.control.supervisor.replicas if r.service == d.service and r.revision in emptied}

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
            await plane.link.wait(quiet, self.control.spec.router.drain_timeout_s)

    def _settle(self, d: Deployment) -> None:
        """The ended deployment's outcome becomes the service's serving revision, in memory at once."""
        record = self.control.records[d.service]
        self.control.records[d.service] = dataclasses.replace(record, revision=d.serving_revision)
        self.active.pop(d.service, None)
        self._marks.pop(d.id, None)

    async def _finish(self, d: Deployment) -> None:
        await self.control.store.put_service(self.control.records[d.service])
        kind = {State.SUCCEEDED: "deployment.succeeded", State.ROLLED_BACK: "deployment.rolled_back"}
        message = d.steps[-1].message if d.steps else d.state.value
        if d.failed_requests:
            message += f"; {d.failed_requests} request(s) failed on revision {d.to_revision}"
        await self._event(kind.get(d.state, "deployment.ended"), d, message)

    async def _save(self, d: Deployment) -> None:
        await self.control.store.put_deployment(d.service, d.id, d.started_at, d.to_dict())

    async def _event(self, kind: str, d: Deployment, message: str) -> None:
        await self.control.supervisor.record(
            Event(kind, d.id, message, d.service, self.control.clock(), {"deployment": d.id})
        )
