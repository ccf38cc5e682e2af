"""The whole routing state as one versioned value: what the control plane sends the router's workers.

A snapshot names every service (its balancing settings, its health path) and every endpoint with its weight and
drain state, plus the router's settings. A worker that loads one ends up routing exactly that, whatever it routed
before: endpoints that are not in it drain, new ones join with slow start, weights change in place. Because it
is the whole state and not a change, a worker that missed some (it was just started, or restarted) needs only the
latest; the version says which one a worker serves. Plain data, JSON both ways; the settings are the spec's own
models, validated again on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portero.spec.models import Balance, RouterSettings, ServiceSpec


@dataclass(frozen=True, slots=True)
class EndpointEntry:
    address: str  # host:port
    weight: int
    source: str  # "replica" (portero runs it), "static" (the spec's `endpoints`) or "registered" (the API)
    replica: str = ""  # the replica's id, for a replica
    draining: bool = False  # no new requests; those in flight may finish within `drain_s`
    drain_s: float = 0.0  # 0: the router's `drain_timeout_s`


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    name: str
    balance: Balance
    health_path: str
    endpoints: tuple[EndpointEntry, ...]


@dataclass(frozen=True, slots=True)
class CertificateEntry:
    """A certificate the HTTPS listeners serve, by file: a worker loads it again only when `fingerprint` changes,
    so a renewal (new files, a new fingerprint) reaches new connections and leaves open ones as they are."""

    names: tuple[str, ...]  # lowercase SNI names it serves, `*.example.com` included
    cert_file: str  # PEM: the certificate and its chain (and the key, when `key_file` is empty)
    key_file: str
    fingerprint: str  # SHA-256 of the certificate


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    version: int
    settings: RouterSettings
    services: tuple[ServiceEntry, ...]  # in the spec's order: the first is where requests go without routes
    certificates: tuple[CertificateEntry, ...] = ()  # the first is served to clients that name no known host
    challenges: tuple[tuple[str, str], ...] = ()  # ACME HTTP-01: (token, key authorization) answered over HTTP

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "settings": self.settings.model_dump(mode="json"),
            "services": [
                {
                    "name": s.name,
                    "balance": s.balance.model_dump(mode="json"),
                    "health_path": s.health_path,
                    "endpoints": [
                        {
                            "address": e.address,
                            "weight": e.weight,
                            "source": e.source,
                            "replica": e.replica,
                            "draining": e.draining,
                            "drain_s": e.drain_s,
                        }
                        for e in s.endpoints
                    ],
                }
                for s in self.services
            ],
            "certificates": [
                {"names": list(c.names), "cert_file": c.cert_file, "key_file": c.key_file, "fingerprint": c.fingerprint}
                for c in self.certificates
            ],
            "challenges": [list(pair) for pair in self.challenges],
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> RoutingSnapshot:
        services = tuple(
            ServiceEntry(
                str(s["name"]),
                Balance.model_validate(s["balance"], strict=False),
                str(s["health_path"]),
                tuple(
                    EndpointEntry(
                        str(e["address"]),
                        int(e["weight"]),
                        str(e["source"]),
                        str(e.get("replica", "")),
                        bool(e.get("draining", False)),
                        float(e.get("drain_s", 0.0)),
                    )
                    for e in s["endpoints"]
                ),
            )
            for s in data["services"]
        )
        settings = RouterSettings.model_validate(data["settings"], strict=False)
        certificates = tuple(
            CertificateEntry(
                tuple(str(n) for n in c["names"]), str(c["cert_file"]), str(c["key_file"]), str(c["fingerprint"])
            )
            for c in data.get("certificates", ())
        )
        challenges = tuple((str(token), str(answer)) for token, answer in data.get("challenges", ()))
        return RoutingSnapshot(int(data["version"]), settings, services, certificates, challenges)


def service_entry(name: str, spec: ServiceSpec, endpoints: tuple[EndpointEntry, ...] = ()) -> ServiceEntry:
    """A service as the spec has it, with its static endpoints and any others given."""
    static = tuple(EndpointEntry(e.address, e.weight, "static") for e in spec.endpoints)
    return ServiceEntry(name, spec.balance, spec.health.path, static + endpoints)


def from_spec(settings: RouterSettings, services: dict[str, ServiceSpec], version: int = 0) -> RoutingSnapshot:
    """The snapshot of a spec alone: its services and their static endpoints (no replicas, nothing registered)."""
    return RoutingSnapshot(version, settings, tuple(service_entry(n, s) for n, s in services.items()))
