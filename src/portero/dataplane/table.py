"""The routing state the control plane wants, and the only place it is changed: the spec's services and static
endpoints, the replicas that are ready (weighted by a deployment's traffic split), servers registered by hand,
weights set by hand, and drains. Every change makes a new version; `snapshot` turns the whole into what the
router's workers load (router/snapshot.py). Pure data, no I/O: plane.py changes it and pushes the snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from portero.replicas import Replica, ReplicaState
from portero.router.snapshot import CertificateEntry, EndpointEntry, RoutingSnapshot, ServiceEntry, service_entry
from portero.spec.models import RouterSettings, ServiceSpec

WEIGHT_SCALE = 1000  # a revision's traffic share is spread over its ready replicas in these units

Key = tuple[str, str]  # (service, address)


@dataclass(frozen=True)
class Drain:
    until: float  # on the control plane's monotonic clock: past it, the endpoint leaves the table
    drain_s: float
    entry: EndpointEntry  # what it was when the drain began (a replica that is no longer ready still drains)


class RoutingTable:
    def __init__(self, settings: RouterSettings, services: dict[str, ServiceSpec]) -> None:
        self.settings = settings
        self.services = services
        self.replicas: dict[str, tuple[EndpointEntry, ...]] = {}
        self.registered: dict[Key, int] = {}
        self.weights: dict[Key, int] = {}  # set by hand for endpoints that are not registered (replicas, static)
        self.draining: dict[Key, Drain] = {}
        self.certificates: tuple[CertificateEntry, ...] = ()  # what the HTTPS listeners serve (tls/manager.py)
        self.challenges: tuple[tuple[str, str], ...] = ()  # ACME HTTP-01 answers pending
        self.version = 0

    def changed(self) -> int:
        self.version += 1
        return self.version

    # -- what changes it -----------------------------------------------------------------------------------------

    def configure(self, settings: RouterSettings, services: dict[str, ServiceSpec]) -> None:
        self.settings = settings
        self.services = services
        self.changed()

    def set_replicas(
        self, replicas: list[Replica], traffic: dict[str, dict[int, float]], serving: dict[str, int | None]
    ) -> bool:
        """The supervisor's ready replicas. Outside a deployment (`traffic` has no split for a service) only its
        serving revision gets requests; during one, each revision's share is divided among its ready replicas.
        True when this changed the table."""
        ready: dict[str, list[Replica]] = {name: [] for name in self.services}
        for replica in replicas:
            if replica.state is ReplicaState.READY and replica.process is not None and replica.service in ready:
                ready[replica.service].append(replica)
        fresh: dict[str, tuple[EndpointEntry, ...]] = {}
        for service, members in ready.items():
            split = traffic.get(service)
            if split is None and serving.get(service) is not None:
                split = {serving[service] or 0: 1.0}
            weight = self.services[service].balance.weight
            fresh[service] = tuple(_replica_entry(r, members, split, weight) for r in members)
        if fresh == self.replicas:
            return False
        self.replicas = fresh
        self.changed()
        return True

    def set_tls(self, certificates: tuple[CertificateEntry, ...], challenges: tuple[tuple[str, str], ...]) -> bool:
        """The certificates and pending challenges the TLS manager wants served; True when this changed them."""
        if (certificates, challenges) == (self.certificates, self.challenges):
            return False
        self.certificates, self.challenges = certificates, challenges
        self.changed()
        return True

    def register(self, service: str, address: str, weight: int) -> None:
        self.registered[(service, address)] = weight
        self.draining.pop((service, address), None)
        self.changed()

    def deregister(self, service: str, address: str, now: float) -> None:
        self.drain(service, address, self.settings.drain_timeout_s, now)
        self.registered.pop((service, address), None)

    def reweight(self, service: str, address: str, weight: int) -> None:
        if (service, address) in self.registered:
            self.registered[(service, address)] = weight
        else:
            self.weights[(service, address)] = weight
        self.changed()

    def drain(self, service: str, address: str, drain_s: float, now: float) -> None:
        """No new requests for it; those in flight may finish within `drain_s`."""
        entry = self.entry(service, address)
        if entry is None:
            raise LookupError(f"service {service!r} has no endpoint {address!r}")
        if (service, address) not in self.draining:
            self.draining[(service, address)] = Drain(now + drain_s, drain_s, entry)
            self.changed()

    def undrain(self, service: str, address: str) -> None:
        if self.draining.pop((service, address), None) is not None:
            self.changed()

    def forget_drained(self, service: str, address: str) -> None:
        """A drain is over: the endpoint leaves unless something wants it again (a registration, a ready replica)."""
        if self.draining.pop((service, address), None) is not None:
            self.changed()

    def expire(self, now: float) -> list[Key]:
        """Drains whose time is up end (the workers have cut what was left)."""
        gone = [key for key, drain in self.draining.items() if now >= drain.until]
        for key in gone:
            del self.draining[key]
        if gone:
            self.changed()
        return gone

    # -- what it says ---------------------------------------------------------------------------------------------

    def entries(self, service: str) -> list[EndpointEntry]:
        """Every endpoint of `service` as the workers should route it."""
        spec = self.services[service]
        found: dict[str, EndpointEntry] = {}
        for entry in service_entry(service, spec).endpoints:
            found[entry.address] = entry
        for entry in self.replicas.get(service, ()):
            found[entry.address] = entry
        for (name, address), weight in self.registered.items():
            if name == service:
                found[address] = EndpointEntry(address, weight, "registered")
        for address, entry in list(found.items()):
            set_by_hand = self.weights.get((service, address))
            if set_by_hand is not None and entry.source != "registered":
                found[address] = _with(entry, weight=set_by_hand)
        for (name, address), drain in self.draining.items():
            if name == service:
                base = found.get(address, drain.entry)
                found[address] = _with(base, draining=True, drain_s=drain.drain_s)
        return list(found.values())

    def entry(self, service: str, address: str) -> EndpointEntry | None:
        if service not in self.services:
            return None
        return next((e for e in self.entries(service) if e.address == address), None)

    def snapshot(self) -> RoutingSnapshot:
        services = tuple(
            ServiceEntry(name, spec.balance, spec.health.path, tuple(self.entries(name)))
            for name, spec in self.services.items()
        )
        return RoutingSnapshot(self.version, self.settings, services, self.certificates, self.challenges)


def _with(
    entry: EndpointEntry, *, weight: int | None = None, draining: bool = False, drain_s: float = 0.0
) -> EndpointEntry:
    return replace(
        entry,
        weight=entry.weight if weight is None else weight,
        draining=draining or entry.draining,
        drain_s=drain_s or entry.drain_s,
    )


def _replica_entry(
    replica: Replica, members: list[Replica], split: dict[int, float] | None, weight: int
) -> EndpointEntry:
    """With a traffic split (a deployment in progress), each revision's share is divided among its replicas."""
    assert replica.process is not None
    if split is not None:
        share = split.get(replica.revision, 0.0)
        peers = sum(1 for r in members if r.revision == replica.revision)
        weight = round(share * WEIGHT_SCALE / peers)
    return EndpointEntry(f"{replica.process.host}:{replica.process.port}", weight, "replica", replica.id)
