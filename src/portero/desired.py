"""Desired state, with one owner: what each service should run and how its traffic is split.

Theory of operation: the spec, the operator, the autoscaler, a deployment and (among several porteros) the
leader all want something of a service. None of them writes it: each hands `DesiredState.apply` an intent
(`Load`, `SetServices`, `Scale`, `Hold`, `Release`, `DropHolds`), applied one at a time, persisted before it
counts (a store that does not answer changes nothing), then told to the observers (the supervisor's wake, the
data plane, the other porteros). What the supervisor keeps (`groups`) and what the router routes by (`traffic`,
`serving`) are derived from that one state, so they never disagree.

A deployment holds a service while it runs (`Hold`): its groups and split win over the record's until it ends
(`Release`), and nothing else may change that service meanwhile: `holder` says which deployment holds it, and
the spec, `scale` and the autoscaler ask it before they act.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from portero.spec.models import ServiceSpec
from portero.store.base import ServiceRecord, Store
from portero.supervisor.decide import Desired

Split = dict[int, float]  # revision -> share of the service's requests (0..1)


@dataclass(frozen=True)
class Rollout:
    """What a running deployment keeps of a service: its growing group, the groups it holds, its split."""

    deployment: str
    revision: int  # the group the supervisor grows (and which replaces any other revision as it gets ready)
    replicas: int
    held: tuple[tuple[int, int], ...] = ()  # other revisions kept at a size meanwhile
    traffic: Split | None = None  # None: every ready replica of either revision gets an equal share


@dataclass(frozen=True)
class SetServices:
    """An applied spec: its managed services, each with its record (services it lacks are removed)."""

    services: Mapping[str, ServiceSpec]
    records: Mapping[str, ServiceRecord]


@dataclass(frozen=True)
class Scale:
    service: str
    replicas: int


@dataclass(frozen=True)
class Hold:
    """A deployment's step: the groups it wants now."""

    service: str
    rollout: Rollout


@dataclass(frozen=True)
class Release:
    """A deployment ended: `revision` serves with the record's count; `file_digest` is the spec file's template
    it brought in, recorded as applied (empty: the record's stays)."""

    service: str
    deployment: str
    revision: int
    file_digest: str = ""


@dataclass(frozen=True)
class Load:
    """Records and split as the store holds them, taken as they are (not written back): at start, and while
    another portero leads (its view)."""

    records: Mapping[str, ServiceRecord]
    traffic: Mapping[str, Split]


@dataclass(frozen=True)
class DropHolds:
    """No deployment holds anything: this portero stopped leading, or took the lead (the last leader's
    deployments ended as aborted)."""


Intent = SetServices | Scale | Hold | Release | Load | DropHolds


class DesiredState:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.observers: list[Callable[[], None]] = []  # told after every change
        self._services: dict[str, ServiceSpec] = {}
        self._records: dict[str, ServiceRecord] = {}
        self._rollouts: dict[str, Rollout] = {}
        self._mirrored: dict[str, Split] = {}
        self._groups: dict[str, Desired] = {}
        self._lock = asyncio.Lock()

    # -- what it says ---------------------------------------------------------------------------------------------

    @property
    def records(self) -> Mapping[str, ServiceRecord]:
        return self._records

    @property
    def groups(self) -> Mapping[str, Desired]:
        """What the supervisor keeps, per managed service."""
        return self._groups

    @property
    def traffic(self) -> dict[str, Split]:
        """Splits between revisions, for the services that have one (a deployment's, or the leader's)."""
        own = {name: dict(r.traffic) for name, r in self._rollouts.items() if r.traffic is not None}
        return {**self._mirrored, **own}

    def serving(self) -> dict[str, int | None]:
        """The revision that takes a service's requests, or None while a deployment spreads them over every ready
        replica of both revisions (rolling)."""
        return {
            name: None if name in self._rollouts and self._rollouts[name].traffic is None else record.revision
            for name, record in self._records.items()
        }

    def holder(self, service: str) -> str | None:
        """The deployment that holds `service`, if one does."""
        rollout = self._rollouts.get(service)
        return rollout.deployment if rollout is not None else None

    # -- what changes it ------------------------------------------------------------------------------------------

    async def apply(self, intent: Intent) -> None:
        """One intent at a time: the records it changes are written to the store first, then it takes effect."""
        async with self._lock:
            records = self._records_after(intent)
            if not isinstance(intent, Load):
                for name, record in records.items():
                    if self._records.get(name) != record:
                        await self.store.put_service(record)
                for gone in set(self._records) - set(records):
                    await self.store.delete_service(gone)
            self._records = dict(records)
            self._take(intent)
            self._derive()
        for observer in self.observers:
            observer()

    def _records_after(self, intent: Intent) -> dict[str, ServiceRecord]:
        records = dict(self._records)
        if isinstance(intent, SetServices | Load):
            records = dict(intent.records)
        elif isinstance(intent, Scale) and intent.service in records:
            records[intent.service] = dataclasses.replace(records[intent.service], desired=intent.replicas)
        elif isinstance(intent, Release) and intent.service in records:
            record = records[intent.service]
            digest = intent.file_digest or record.file_digest
            records[intent.service] = dataclasses.replace(record, revision=intent.revision, file_digest=digest)
        return records

    def _take(self, intent: Intent) -> None:
        if isinstance(intent, SetServices):
            self._services = dict(intent.services)
        elif isinstance(intent, Hold) and intent.service in self._records:
            self._rollouts[intent.service] = intent.rollout
        elif isinstance(intent, Release) and self.holder(intent.service) == intent.deployment:
            del self._rollouts[intent.service]
        elif isinstance(intent, Load):
            self._mirrored = {name: dict(split) for name, split in intent.traffic.items()}
        elif isinstance(intent, DropHolds):
            self._rollouts.clear()
            self._mirrored.clear()
        self._rollouts = {name: r for name, r in self._rollouts.items() if name in self._records}

    def _derive(self) -> None:
        groups: dict[str, Desired] = {}
        for name, service in self._services.items():
            record = self._records.get(name)
            if record is None:
                continue
            want = Desired(name, record.revision, record.desired, service.health, service.restart, service.stop_grace_s)
            rollout = self._rollouts.get(name)
            if rollout is not None:
                want = dataclasses.replace(
                    want, revision=rollout.revision, replicas=rollout.replicas, held=rollout.held
                )
            groups[name] = want
        self._groups = groups
