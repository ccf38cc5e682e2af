"""A service's health as the operator sees it: its ready replicas against the desired count, and whether any
endpoint takes requests. Pure: counts and the routing table's entries in, a verdict out; `/scalability/health`
and the monitor (the `service-unroutable` alert) read the same one.

A service whose endpoints are all drained or at weight 0 is down however many replicas are ready: each request
waits in the router's queue, then gets a 503. A service at zero replicas (scaled to zero, or starting) has no
endpoint at all: that is a cold start or a missing replica (`replica-down`), not this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from portero.router.snapshot import EndpointEntry


def takes_requests(entry: EndpointEntry) -> bool:
    return not entry.draining and entry.weight > 0


@dataclass(frozen=True)
class ServiceCondition:
    desired: int  # 0 for a service portero does not run (`endpoints` only)
    ready: int
    endpoints: int | None  # in the routing table, draining ones included; None: the router is off
    routable: int | None  # of those, the ones that take requests

    @property
    def unroutable(self) -> bool:
        return self.routable == 0 and bool(self.endpoints)

    def problems(self) -> list[str]:
        found = []
        if self.ready < self.desired:
            found.append(f"{self.ready} of {self.desired} replica(s) ready")
        if self.unroutable:
            found.append(
                f"no endpoint takes requests: all {self.endpoints} draining or at weight 0, so every request waits "
                "then gets 503 (`portero undrain`)"
            )
        return found


def condition(desired: int, ready: int, entries: Sequence[EndpointEntry] | None, *, managed: bool) -> ServiceCondition:
    """`entries`: the service's routing table entries (None with the router off). A managed service that should
    have no replica (scaled to zero) has nothing to route: its last endpoints draining are no outage."""
    if entries is None:
        return ServiceCondition(desired, ready, None, None)
    if managed and desired == 0:
        entries = [e for e in entries if takes_requests(e)]
    return ServiceCondition(desired, ready, len(entries), sum(1 for e in entries if takes_requests(e)))
