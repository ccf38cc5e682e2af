"""The control plane's core: one object that the API, the CLI's live view and the tests drive.

It turns an applied spec into revisions and desired counts in the store, and hands them to the supervisor.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portero.deploy.model import Deployment
from portero.events import Event
from portero.replicas import Replica
from portero.revisions import Revision
from portero.runtimes.base import Runtime, RuntimeFailure
from portero.spec.models import ServiceSpec, Spec
from portero.store.base import ServiceRecord, Store
from portero.supervisor.decide import Desired
from portero.supervisor.loop import Supervisor

if TYPE_CHECKING:
    from portero.deploy.loop import Deployer

log = logging.getLogger(__name__)
KEEP_REVISIONS = 10


class NotFound(LookupError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} named {name!r}")
        self.kind = kind
        self.name = name


class Refused(ValueError):
    """A request that is well-formed but cannot be done in the current state; says what would work."""


@dataclass(frozen=True)
class ServiceView:
    name: str
    spec: ServiceSpec
    record: ServiceRecord
    replicas: list[Replica]


class ControlPlane:
    def __init__(
        self,
        spec: Spec,
        base_dir: Path,
        store: Store,
        runtime: Runtime,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.records: dict[str, ServiceRecord] = {}
        self.supervisor = Supervisor(runtime, store, base_dir, clock)
        self.started_at = clock()
        self.on_applied: list[Callable[[Spec], None]] = []  # told of every applied spec (the router)
        # Traffic split per service while a deployment runs: revision -> share (0..1); absent: equal weights.
        self.traffic: dict[str, dict[int, float]] = {}
        self.deployer: Deployer | None = None
        # Tells the other porteros of a change that is not in the store (several porteros on one Redis).
        self.announce: Callable[[dict[str, Any]], Awaitable[None]] = _nobody

    @property
    def acting(self) -> bool:
        """This portero runs the controllers (always, unless several share a Redis and another one leads)."""
        return self.supervisor.acting

    async def start(self, source: str) -> None:
        self.records = await self.store.get_services()
        await self.apply(self.spec, source, reason=f"portero up ({source})")
        await self.supervisor.adopt()

    async def apply(self, spec: Spec, source: str, reason: str) -> list[str]:
        """Make `spec` the desired state; returns what changed, one line each. Validation happened before."""
        spec = await self._prepare(spec)
        changes: list[str] = []
        desired: dict[str, Desired] = {}
        deploys: list[tuple[str, int]] = []
        for name, service in spec.services.items():
            old = self.records.get(name)
            file_digest = service.template_digest()
            for older in await self.store.get_revisions(name):
                self.supervisor.templates.setdefault((name, older.number), _template(older))
            if old is not None and old.file_digest == file_digest and (name, old.revision) in self.supervisor.templates:
                serving = old.revision  # the file did not change: what runs stays (a deploy may have moved it)
            else:
                revision, note = await self._revision_for(name, service, reason)
                if note:
                    changes.append(note)
                self.supervisor.templates[(name, revision.number)] = service
                serving = revision.number
                if old is not None and old.revision != serving and service.managed and self.deployer is not None:
                    deploys.append((name, serving))  # moved by a strategy, not all at once
                    serving = old.revision
            record = self._record_for(name, service, serving, file_digest)
            if record != self.records.get(name):
                await self.store.put_service(record)
                old = self.records.get(name)
                if old is None or old.desired != record.desired:
                    changes.append(f"{name}: {record.desired} replica(s)")
                self.records[name] = record
            if service.managed:
                desired[name] = _desired(name, service, record)
        for gone in set(self.records) - set(spec.services):
            await self.store.delete_service(gone)
            del self.records[gone]
            changes.append(f"{gone}: removed")
        await self.store.put_spec(source, spec.model_dump(mode="json"))
        async with self.supervisor.lock:
            for name, want in desired.items():  # a running deployment keeps the groups it set
                running = self.supervisor.desired.get(name)
                if self.deployer is not None and name in self.deployer.active and running is not None:
                    desired[name] = dataclasses.replace(want, revision=running.revision, held=running.held)
            self.supervisor.desired = desired
        self.spec = spec
        for hook in self.on_applied:
            hook(spec)
        message = "; ".join(changes) or "no change"
        await self.supervisor.record(Event("spec.applied", "spec", f"{reason}: {message}", at=self.clock()))
        self.supervisor.wake()
        for name, number in deploys:
            assert self.deployer is not None
            deployment = await self.deployer.start(name, number, strategy_name=None, kind="deploy", trigger=reason)
            changes.append(f"{name}: deployment {deployment.id} started")
        return changes

    async def _prepare(self, spec: Spec) -> Spec:
        """The runtime readies each service's revision first (the container runtimes build its image and pin it in
        the template): a failing build refuses the whole spec before anything changes, and what runs keeps running."""
        services = dict(spec.services)
        for name, service in spec.services.items():
            if not service.managed:
                continue

            async def progress(line: str, name: str = name) -> None:
                await self.supervisor.record(Event("image.build", name, line, name, self.clock()))

            try:
                services[name] = await self.runtime.prepare(name, service, self.base_dir, progress)
            except RuntimeFailure as exc:
                await self.supervisor.record(Event("image.failed", name, str(exc), name, self.clock()))
                advice = "" if not exc.retryable else " (the Engine may answer again: try again)"
                raise Refused(f"services.{name}: {exc}{advice}") from exc
        return spec.model_copy(update={"services": services})

    async def _revision_for(self, name: str, service: ServiceSpec, reason: str) -> tuple[Revision, str | None]:
        """The kept revision with this template (a rollback by file reuses it), or a new one."""
        digest = service.template_digest()
        revisions = await self.store.get_revisions(name)
        for known in reversed(revisions):
            if known.digest == digest:
                return known, None
        number = revisions[-1].number + 1 if revisions else 1
        template = service.model_dump(mode="json")
        revision = Revision(name, number, digest, template, self.clock(), reason)
        await self.store.add_revision(revision, keep=KEEP_REVISIONS)
        message = f"revision {number} ({digest})"
        await self.supervisor.record(Event("revision.created", f"{name}@{number}", message, name, self.clock()))
        return revision, f"{name}: revision {number}"

    def _record_for(self, name: str, service: ServiceSpec, revision: int, file_digest: str) -> ServiceRecord:
        """`replicas.initial` sets the count when it is new or changed; otherwise a scaled count is kept."""
        limits = service.replicas
        old = self.records.get(name)
        if old is None or old.initial != limits.initial:
            desired = limits.initial
        else:
            desired = min(max(old.desired, limits.min), limits.max)
        return ServiceRecord(name, desired, limits.initial, revision, file_digest)

    async def scale(self, name: str, replicas: int, reason: str = "") -> ServiceRecord:
        service = self.service_spec(name)
        if not service.managed:
            raise Refused(f"{name}: portero runs no replicas of it (it only routes to its `endpoints`)")
        if self.deployer is not None and name in self.deployer.active:
            running = self.deployer.active[name].id
            raise Refused(f"{name}: deployment {running} is running; scale when it has ended")
        limits = service.replicas
        if not limits.min <= replicas <= limits.max:
            raise Refused(
                f"{name}: {replicas} replicas is outside the spec's limits {limits.min}..{limits.max} "
                f"(services.{name}.replicas.min/max)"
            )
        record = self.records[name]
        updated = ServiceRecord(name, replicas, record.initial, record.revision, record.file_digest)
        await self.store.put_service(updated)
        self.records[name] = updated
        async with self.supervisor.lock:
            self.supervisor.desired[name] = _desired(name, service, updated)
        message = f"scaled from {record.desired} to {replicas}" + (f": {reason}" if reason else "")
        await self.supervisor.record(Event("service.scaled", name, message, name, self.clock()))
        self.supervisor.wake()
        return updated

    async def deploy(
        self,
        name: str,
        *,
        version: str | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        strategy: str | None = None,
        trigger: str,
    ) -> Deployment:
        """A new revision from the serving one with these changes, moved in by the deployer."""
        service = self.service_spec(name)
        if not service.managed or self.deployer is None:
            raise Refused(f"{name}: portero runs no replicas of it, so there is nothing to deploy")
        serving = self.supervisor.templates[(name, self.records[name].revision)]
        data = serving.model_dump(mode="json")
        if version is not None:
            data["version"] = version
        if image is not None:
            data["image"] = image
        data["env"] = {**data.get("env", {}), **(env or {})}
        template = ServiceSpec.model_validate(data, strict=False)
        revision, _ = await self._revision_for(name, template, trigger)
        self.supervisor.templates[(name, revision.number)] = template
        return await self.deployer.start(name, revision.number, strategy_name=strategy, kind="deploy", trigger=trigger)

    async def rollback(self, name: str, revision: int | None, trigger: str) -> Deployment:
        """Back to a kept revision (the one before the serving one when not given), itself a deployment."""
        self.service_spec(name)
        if self.deployer is None:
            raise Refused("deployments need the deployer, which runs with `portero up`")
        serving = self.records[name].revision
        kept = [r.number for r in await self.store.get_revisions(name)]
        target = revision if revision is not None else max((n for n in kept if n < serving), default=None)
        if target is None or target not in kept:
            raise Refused(
                f"{name}: no kept revision {target if target is not None else 'before ' + str(serving)} "
                f"to roll back to (kept: {kept})"
            )
        if target == serving and name in self.deployer.active:
            raise Refused(f"{name}: a deployment is running; it rolls back by itself when its analysis fails")
        return await self.deployer.start(name, target, strategy_name=None, kind="rollback", trigger=trigger)

    def service_spec(self, name: str) -> ServiceSpec:
        service = self.spec.services.get(name)
        if service is None:
            raise NotFound("service", name)
        return service

    def replica(self, replica_id: str) -> Replica:
        replica = self.supervisor.find(replica_id)
        if replica is None:
            raise NotFound("replica", replica_id)
        return replica

    def services(self) -> list[ServiceView]:
        replicas = self.supervisor.replicas
        return [
            ServiceView(name, spec, self.records[name], [r for r in replicas if r.service == name])
            for name, spec in self.spec.services.items()
            if name in self.records
        ]

    async def shutdown(self) -> None:
        await self.supervisor.shutdown()


async def _nobody(change: dict[str, Any]) -> None:
    return None


def _desired(name: str, service: ServiceSpec, record: ServiceRecord) -> Desired:
    return Desired(name, record.revision, record.desired, service.health, service.restart, service.stop_grace_s)


def _template(revision: Revision) -> ServiceSpec:
    return ServiceSpec.model_validate(revision.template, strict=False)
