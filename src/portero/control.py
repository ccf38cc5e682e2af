"""The control plane's core: one object that the API, the CLI's live view and the tests drive.

It turns an applied spec into revisions and desired counts in the store, and hands them to the supervisor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from portero.events import Event
from portero.replicas import Replica
from portero.revisions import Revision
from portero.runtimes.base import Runtime, RuntimeFailure
from portero.spec.models import ServiceSpec, Spec
from portero.store.base import ServiceRecord, Store
from portero.supervisor.decide import Desired
from portero.supervisor.loop import Supervisor

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

    async def start(self, source: str) -> None:
        self.records = await self.store.get_services()
        await self.apply(self.spec, source, reason=f"portero up ({source})")
        await self.supervisor.adopt()

    async def apply(self, spec: Spec, source: str, reason: str) -> list[str]:
        """Make `spec` the desired state; returns what changed, one line each. Validation happened before."""
        spec = await self._prepare(spec)
        changes: list[str] = []
        desired: dict[str, Desired] = {}
        for name, service in spec.services.items():
            revision, note = await self._revision_for(name, service, reason)
            if note:
                changes.append(note)
            record = self._record_for(name, service, revision.number)
            if record != self.records.get(name):
                await self.store.put_service(record)
                old = self.records.get(name)
                if old is None or old.desired != record.desired:
                    changes.append(f"{name}: {record.desired} replica(s)")
                self.records[name] = record
            self.supervisor.templates[(name, revision.number)] = service
            for older in await self.store.get_revisions(name):
                self.supervisor.templates.setdefault((name, older.number), _template(older))
            if service.managed:
                desired[name] = _desired(name, service, record)
        for gone in set(self.records) - set(spec.services):
            await self.store.delete_service(gone)
            del self.records[gone]
            changes.append(f"{gone}: removed")
        await self.store.put_spec(source, spec.model_dump(mode="json"))
        async with self.supervisor.lock:
            self.supervisor.desired = desired
        self.spec = spec
        for hook in self.on_applied:
            hook(spec)
        message = "; ".join(changes) or "no change"
        await self.supervisor.record(Event("spec.applied", "spec", f"{reason}: {message}", at=self.clock()))
        self.supervisor.wake()
        return changes

    async def _prepare(self, spec: Spec) -> Spec:
        """The runtime readies each service's revision first (the container runtimes build its image and pin it in
        the template): a failing build refuses the whole spec before anything changes, and what runs keeps running."""
        services = dict(spec.services)
        for name, service in spec.services.items():
            if not service.managed:
                continue

            async def progress(line: str, name: str = name) -> None:
                if line.startswith("Step ") or line.startswith("Successfully built"):
                    await self.supervisor.record(Event("image.build", name, line, name, self.clock()))

            try:
                services[name] = await self.runtime.prepare(name, service, self.base_dir, progress)
            except RuntimeFailure as exc:
                await self.supervisor.record(Event("image.failed", name, str(exc), name, self.clock()))
                advice = "" if not exc.retryable else " (the Engine may answer again: try again)"
                raise Refused(f"services.{name}: {exc}{advice}") from exc
        return spec.model_copy(update={"services": services})

    async def _revision_for(self, name: str, service: ServiceSpec, reason: str) -> tuple[Revision, str | None]:
        digest = service.template_digest()
        revisions = await self.store.get_revisions(name)
        if revisions and revisions[-1].digest == digest:
            return revisions[-1], None
        number = revisions[-1].number + 1 if revisions else 1
        template = service.model_dump(mode="json")
        revision = Revision(name, number, digest, template, self.clock(), reason)
        await self.store.add_revision(revision, keep=KEEP_REVISIONS)
        message = f"revision {number} ({digest})"
        await self.supervisor.record(Event("revision.created", f"{name}@{number}", message, name, self.clock()))
        return revision, f"{name}: revision {number}"

    def _record_for(self, name: str, service: ServiceSpec, revision: int) -> ServiceRecord:
        """`replicas.initial` sets the count when it is new or changed; otherwise a scaled count is kept."""
        limits = service.replicas
        old = self.records.get(name)
        if old is None or old.initial != limits.initial:
            desired = limits.initial
        else:
            desired = min(max(old.desired, limits.min), limits.max)
        return ServiceRecord(name, desired, limits.initial, revision)

    async def scale(self, name: str, replicas: int) -> ServiceRecord:
        service = self.service_spec(name)
        if not service.managed:
            raise Refused(f"{name}: portero runs no replicas of it (it only routes to its `endpoints`)")
        limits = service.replicas
        if not limits.min <= replicas <= limits.max:
            raise Refused(
                f"{name}: {replicas} replicas is outside the spec's limits {limits.min}..{limits.max} "
                f"(services.{name}.replicas.min/max)"
            )
        record = self.records[name]
        updated = ServiceRecord(name, replicas, record.initial, record.revision)
        await self.store.put_service(updated)
        self.records[name] = updated
        async with self.supervisor.lock:
            self.supervisor.desired[name] = _desired(name, service, updated)
        message = f"scaled from {record.desired} to {replicas}"
        await self.supervisor.record(Event("service.scaled", name, message, name, self.clock()))
        self.supervisor.wake()
        return updated

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


def _desired(name: str, service: ServiceSpec, record: ServiceRecord) -> Desired:
    return Desired(name, record.revision, record.desired, service.health, service.restart, service.stop_grace_s)


def _template(revision: Revision) -> ServiceSpec:
    return ServiceSpec.model_validate(revision.template, strict=False)
