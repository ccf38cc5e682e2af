"""The `Store` seam. SQLite is the embedded default; Redis joins it when several porteros share state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from portero.events import Event
from portero.replicas import Replica
from portero.revisions import Revision


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    desired: int  # replicas the supervisor keeps; `portero scale` and the autoscaler move it
    initial: int  # the spec's `replicas.initial` when `desired` was last set from the spec
    revision: int  # the revision that serves (a deployment moves it when it succeeds)
    file_digest: str = ""  # template digest of the spec file when last applied: an unchanged file deploys nothing


@dataclass(frozen=True)
class ServerRecord:
    """A server registered by hand with the router (one portero does not run)."""

    service: str
    address: str
    weight: int


class StoreUnavailable(RuntimeError):
    """The store did not answer (Redis down or unreachable): the write was not made; retry it later."""


class StaleLeader(RuntimeError):
    """A controller's write under a fencing token that is no longer current: another portero leads now."""


def dropped(numbers: list[int], keep: int, pinned: frozenset[int]) -> list[int]:
    """Which revisions `add_revision` drops: the oldest beyond the newest `keep`, none of `pinned`."""
    ordered = sorted(set(numbers))
    return [n for n in ordered[: max(len(ordered) - max(keep, 1), 0)] if n not in pinned]


class Store(Protocol):
    async def close(self) -> None: ...

    async def put_spec(self, source: str, spec: dict[str, Any]) -> None: ...
    async def get_spec(self) -> tuple[str, dict[str, Any]] | None: ...

    async def put_service(self, record: ServiceRecord) -> None: ...
    async def get_services(self) -> dict[str, ServiceRecord]: ...
    async def delete_service(self, name: str) -> None: ...

    async def add_revision(self, revision: Revision, keep: int, pinned: frozenset[int] = frozenset()) -> None:
        """Add it and drop the oldest beyond the newest `keep`, but never one of `pinned` (the serving revision and
        those a running deployment moves between): history may lose what is past, never what runs."""
        ...

    async def get_revisions(self, service: str) -> list[Revision]: ...

    async def save_replicas(self, replicas: list[Replica]) -> None:
        """Replace the whole set atomically: a reader sees the old set or the new one, never a mix."""
        ...

    async def load_replicas(self) -> list[Replica]: ...

    async def put_server(self, server: ServerRecord) -> None: ...
    async def delete_server(self, service: str, address: str) -> None: ...
    async def get_servers(self) -> list[ServerRecord]: ...

    async def put_deployment(
        self, service: str, deployment_id: str, started_at: float, body: dict[str, Any]
    ) -> None: ...

    async def get_deployments(self, service: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        ...

    async def append_event(self, event: Event) -> Event: ...
    async def get_events(
        self, *, since: float | None = None, service: str | None = None, limit: int = 100
    ) -> list[Event]: ...
