"""The control plane's core: one object that the API, the CLI's live view and the tests drive.

It turns an applied spec into revisions and records, asks the deployer to move a service whose template
changed, and hands every change of what should run to its owner (desired.py) as an intent. It writes nothing
of desired state itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portero.deploy.loop import Deployer
from portero.deploy.model import Deployment
from portero.desired import DesiredState, Load, Scale, SetServices
from portero.errors import NotFound, Refused
from portero.events import Event
from portero.replicas import Replica
from portero.revisions import Revision
from portero.runtimes.base import Runtime, RuntimeFailure
from portero.spec import changes as spec_changes
from portero.spec.models import DeploySettings, ServiceSpec, Spec, StrategyName
from portero.store.base import ServiceRecord, Store
from portero.supervisor.loop import Supervisor

log = logging.getLogger(__name__)
KEEP_REVISIONS = 10


@dataclass(frozen=True)
class ServiceView:
    name: str
    spec: ServiceSpec
    record: ServiceRecord
    replicas: list[Replica]


@dataclass(frozen=True)
class Applied:
    """What an applied spec changed, one line each, and the deployments it started (to be followed)."""

    changes: list[str]
    deployments: list[Deployment]


@dataclass(frozen=True)
class _Move:
    """A service whose file template differs from what serves: a deployment to start."""

    service: str
    revision: int
    file_digest: str


class ControlPlane:
    def __init__(
        self,
        spec: Spec,
        base_dir: Path,
        store: Store,
        runtime: Runtime,
        *,
        supervisor: Supervisor,
        desired: DesiredState,
        deployer: Deployer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.store = store
        self.runtime = runtime
        self.supervisor = supervisor
        self.desired = desired
        self.deployer = deployer
        self.clock = clock
        self.started_at = clock()
        self.on_applied: list[Callable[[Spec], None]] = []  # told of every applied spec (router, monitor)
        # Tells the other porteros of a change that is not in the store (several porteros on one Redis).
        self.announce: Callable[[dict[str, Any]], Awaitable[None]] = _nobody

    @property
    def records(self) -> Mapping[str, ServiceRecord]:
        return self.desired.records

    @property
    def acting(self) -> bool:
        """This portero runs the controllers (always, unless several share a Redis and another one leads)."""
        return self.supervisor.acting

    async def start(self, source: str) -> None:
        await self.desired.apply(Load(await self.store.get_services(), {}))
        await self.apply(self.spec, source, reason=f"portero up ({source})", first=True)
        await self.supervisor.adopt()

    # -- the spec -------------------------------------------------------------------------------------------------

    async def apply(self, spec: Spec, source: str, reason: str, *, first: bool = False) -> Applied:
        """Make `spec` the desired state. Validation happened before; a refused spec changes nothing (not a
        revision, not a record): a field that cannot change live, or a service that a deployment holds."""
        spec = await self._prepare(spec)
        found = [] if first else spec_changes.changes(self.spec, spec)
        self._refuse(spec, found)
        records, moves, notes = await self._plan(spec, reason)
        managed = {name: service for name, service in spec.services.items() if service.managed}
        await self.desired.apply(SetServices(managed, records))
        await self.store.put_spec(source, spec.model_dump(mode="json"))
        self.spec = spec
        for hook in self.on_applied:
            hook(spec)
        started = [await self._deploy_from_file(move, reason) for move in moves]
        lines = _describe(found, started, notes)
        message = "; ".join(lines) or "no change"
        await self.supervisor.record(Event("spec.applied", "spec", f"{reason}: {message}", at=self.clock()))
        return Applied(lines, started)

    def _refuse(self, spec: Spec, found: list[spec_changes.Change]) -> None:
        fixed = [f"{change.text()}: {advice}" for change in found if (advice := spec_changes.refusal(change))]
        if fixed:
            raise Refused("cannot change while portero runs: " + "; ".join(fixed) + "; nothing was changed")
        for name in self.spec.services:
            holder = self.desired.holder(name)
            if holder is None or spec.services.get(name) == self.spec.services[name]:
                continue
            what = "removed" if name not in spec.services else "changed"
            raise Refused(
                f"services.{name} {what} while deployment {holder} moves it; nothing was changed. Apply again when "
                f"it has ended, or abort it first (portero deploy {name} --abort)"
            )

    async def _plan(self, spec: Spec, reason: str) -> tuple[dict[str, ServiceRecord], list[_Move], list[str]]:
        """Each service's record as the spec wants it, and the services whose template must be deployed."""
        records: dict[str, ServiceRecord] = {}
        moves: list[_Move] = []
        notes: list[str] = []
        for name, service in spec.services.items():
            old = self.records.get(name)
            file_digest = service.template_digest()
            for older in await self.store.get_revisions(name):
                self.supervisor.templates.setdefault((name, older.number), _template(older))
            if old is not None and old.file_digest == file_digest and (name, old.revision) in self.supervisor.templates:
                serving, recorded = old.revision, file_digest  # the file did not change: what runs stays
            elif old is not None and self.desired.holder(name) is not None:
                serving, recorded = old.revision, old.file_digest  # its deployment carries it (`_refuse` checked)
            else:
                revision, note = await self._revision_for(name, service, reason)
                notes += [note] if note else []
                self.supervisor.templates[(name, revision.number)] = service
                serving, recorded = revision.number, file_digest
                if old is not None and old.revision != serving and service.managed:
                    moves.append(_Move(name, serving, file_digest))  # moved by a strategy, recorded when it serves
                    serving, recorded = old.revision, old.file_digest
            records[name] = self._record_for(name, service, serving, recorded)
            if old is None or old.desired != records[name].desired:
                notes.append(f"{name}: {records[name].desired} replica(s)")
        notes += [f"{gone}: removed" for gone in set(self.records) - set(spec.services)]
        return records, moves, notes

    async def _deploy_from_file(self, move: _Move, reason: str) -> Deployment:
        return await self.deployer.start(
            move.service,
            move.revision,
            settings=self.settings(move.service),
            strategy_name=None,
            kind="deploy",
            trigger=reason,
            file_digest=move.file_digest,
        )

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
        await self.store.add_revision(revision, keep=KEEP_REVISIONS, pinned=self._pinned(name))
        message = f"revision {number} ({digest})"
        await self.supervisor.record(Event("revision.created", f"{name}@{number}", message, name, self.clock()))
        return revision, f"{name}: revision {number}"

    def _pinned(self, name: str) -> frozenset[int]:
        """Revisions history must keep: the serving one, and both ends of a running deployment."""
        record = self.records.get(name)
        running = self.deployer.running(name)
        ends = (running.from_revision, running.to_revision) if running is not None else ()
        return frozenset((*ends, *((record.revision,) if record is not None else ())))

    def _record_for(self, name: str, service: ServiceSpec, revision: int, file_digest: str) -> ServiceRecord:
        """`replicas.initial` sets the count when it is new or changed; otherwise a scaled count is kept."""
        limits = service.replicas
        old = self.records.get(name)
        if old is None or old.initial != limits.initial:
            desired = limits.initial
        else:
            desired = min(max(old.desired, limits.min), limits.max)
        return ServiceRecord(name, desired, limits.initial, revision, file_digest)

    # -- operator and controller commands ---------------------------------------------------------------------------

    async def scale(self, name: str, replicas: int, *, reason: str = "", automatic: bool = False) -> ServiceRecord:
        """Set a service's count; `automatic`: the autoscaler asks (an operator is refused while it runs)."""
        service = self.service_spec(name)
        if not service.managed:
            raise Refused(f"{name}: portero runs no replicas of it (it only routes to its `endpoints`)")
        holder = self.desired.holder(name)
        if holder is not None:
            raise Refused(f"{name}: deployment {holder} is running; scale when it has ended")
        if not automatic and self.spec.autoscale.enabled and service.autoscale.enabled:
            raise Refused(
                f"{name}: the autoscaler sets its count (autoscale.enabled), and would undo this at its next pass. "
                f"Bound it with services.{name}.replicas.min/max, or turn it off for this service "
                f"(services.{name}.autoscale.enabled: false) and apply"
            )
        limits = service.replicas
        if not limits.min <= replicas <= limits.max:
            raise Refused(
                f"{name}: {replicas} replicas is outside the spec's limits {limits.min}..{limits.max} "
                f"(services.{name}.replicas.min/max)"
            )
        before = self.records[name].desired
        await self.desired.apply(Scale(name, replicas))
        message = f"scaled from {before} to {replicas}" + (f": {reason}" if reason else "")
        await self.supervisor.record(Event("service.scaled", name, message, name, self.clock()))
        return self.records[name]

    async def deploy(
        self,
        name: str,
        *,
        version: str | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        strategy: StrategyName | None = None,
        trigger: str,
    ) -> Deployment:
        """A new revision from the serving one with these changes, moved in by the deployer. A refused request
        creates nothing."""
        service = self.service_spec(name)
        if not service.managed:
            raise Refused(f"{name}: portero runs no replicas of it, so there is nothing to deploy")
        if image is not None and self.runtime.name == "process":
            raise Refused(
                f"image: the process runtime runs services.{name}.command, so a new image would change nothing; "
                "deploy --version or --set instead (image applies to the docker and swarm runtimes)"
            )
        self.deployer.refuse_while_running(name)
        data = self.supervisor.templates[(name, self.records[name].revision)].model_dump(mode="json")
        data = {**data, **({"version": version} if version is not None else {}), **({"image": image} if image else {})}
        data["env"] = {**data.get("env", {}), **(env or {})}
        template = ServiceSpec.model_validate(data, strict=False)
        serving = self.records[name].revision
        if template.template_digest() == self.supervisor.templates[(name, serving)].template_digest():
            raise Refused(f"{name}: revision {serving} already runs this; nothing to deploy")
        revision, _ = await self._revision_for(name, template, trigger)
        self.supervisor.templates[(name, revision.number)] = template
        return await self.deployer.start(
            name, revision.number, settings=self.settings(name), strategy_name=strategy, kind="deploy", trigger=trigger
        )

    async def rollback(self, name: str, revision: int | None, trigger: str) -> Deployment:
        """Back to a kept revision (the one before the serving one when not given), itself a deployment."""
        self.service_spec(name)
        self.deployer.refuse_while_running(name)
        serving = self.records[name].revision
        kept = [r.number for r in await self.store.get_revisions(name)]
        target = revision if revision is not None else max((n for n in kept if n < serving), default=None)
        if target is None or target not in kept:
            raise Refused(
                f"{name}: no kept revision {target if target is not None else 'before ' + str(serving)} "
                f"to roll back to (kept: {kept})"
            )
        return await self.deployer.start(
            name, target, settings=self.settings(name), strategy_name=None, kind="rollback", trigger=trigger
        )

    async def abort(self, deployment_id: str, who: str) -> Deployment:
        """Stop a running deployment: the serving revision takes all traffic back at once."""
        return await self.deployer.abort(deployment_id, who)

    def settings(self, name: str) -> DeploySettings:
        return self.spec.services[name].deploy or self.spec.deploy

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


def _describe(found: list[spec_changes.Change], started: list[Deployment], notes: list[str]) -> list[str]:
    """One line per changed field and how it took effect; without field changes (at start, or a file whose
    template is deployed again), what the records say."""
    carried = {d.service: d for d in started}
    lines = []
    for change in found:
        d = carried.get(change.service or "")
        how = spec_changes.effect(change)
        if how == spec_changes.TEMPLATE and d is not None:
            how = f"revision {d.to_revision}, deployment {d.id} ({d.strategy})"
        elif how == spec_changes.TEMPLATE:
            how = "revision as before (the template is that of the serving revision)"
        lines.append(f"{change.text()}: {how}")
    shown = {change.service for change in found}
    for d in started:
        if d.service not in shown:  # the file's template did not change, but is not what serves yet
            lines.append(f"{d.service}: deployment {d.id} ({d.strategy}) to revision {d.to_revision} of the file")
    if not found:
        lines = notes + lines
    return lines


async def _nobody(change: dict[str, Any]) -> None:
    return None


def _template(revision: Revision) -> ServiceSpec:
    return ServiceSpec.model_validate(revision.template, strict=False)
