"""The control plane's data plane: the routing table it owns, pushed to the router's processes as snapshots.

Every change of the table (a replica ready or gone, a traffic split, a registration, a weight, a drain, a new
spec) schedules one push at the end of the event loop's pass, so that the changes of one pass go out as one
snapshot. What must hold on every worker before it is reported (the blue-green switch, a drain) waits for the
workers' acknowledgements (`settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from portero.dataplane.link import RouterLink
from portero.dataplane.report import EndpointRecord, endpoint_out
from portero.dataplane.table import RoutingTable
from portero.desired import DesiredState
from portero.events import Event
from portero.replicas import Replica
from portero.router.balancer import make_balancer
from portero.router.target import Target
from portero.spec.models import Spec
from portero.store.base import ServerRecord
from portero.supervisor.loop import Supervisor
from portero.tasks import spawn

if TYPE_CHECKING:
    from portero.tls.manager import TlsManager

log = logging.getLogger(__name__)
SETTLE_TIMEOUT_S = 10.0  # the workers acknowledge a snapshot within this (they take milliseconds)


class DataPlane:
    def __init__(
        self,
        spec: Spec,
        desired: DesiredState,
        supervisor: Supervisor,
        link: RouterLink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.desired = desired  # the replicas' weights follow its traffic splits
        self.supervisor = supervisor
        self.link = link
        self.clock = clock
        self.table = RoutingTable(spec.router, {n: s for n, s in spec.services.items()})
        self._pushing = False
        self._held = False  # no push until `release`: an adopted router keeps its snapshot meanwhile
        self._sent = -1  # the version pushed last
        # (when, seconds from a push to every worker serving it), the latest 1,000 pushes made to running workers
        self.push_times: deque[tuple[float, float]] = deque(maxlen=1000)
        self.tls: TlsManager | None = None  # the certificates the HTTPS listeners serve (daemon.py makes it)

    async def attach(self, servers: list[ServerRecord]) -> None:
        """Before the supervisor adopts or starts anything: registrations restored, hooks in place. Versions go on
        from the one the router serves (an adopted router has seen another control plane's)."""
        if self.link.hello is not None:
            self.table.version = max(self.table.version, self.link.hello.version)
        for server in servers:
            if server.service in self.table.services:
                self.table.register(server.service, server.address, server.weight)
        self.supervisor.observers.append(self.sync)
        self.supervisor.drain = self.drain
        self.desired.observers.append(self.sync)
        self.link.on_event.append(self._record_event)

    # -- changes --------------------------------------------------------------------------------------------------

    def configure(self, spec: Spec) -> None:
        """A new spec applied (control.py's `on_applied`)."""
        self.table.configure(spec.router, dict(spec.services))
        self.sync()

    def sync(self, replicas: list[Replica] | None = None) -> None:
        """The supervisor's replicas, or what should serve (a deployment's split), changed."""
        replicas = self.supervisor.replicas if replicas is None else replicas
        self.table.set_replicas(replicas, self.desired.traffic, self.desired.serving())
        self.push()

    def hold(self) -> None:
        self._held = True

    def release(self) -> None:
        self._held = False
        self.push()

    def push(self) -> None:
        """Send the table once this pass of the event loop is over (all of the pass's changes in one snapshot)."""
        if not self._pushing and not self._held:
            self._pushing = True
            asyncio.get_running_loop().call_soon(self._push)

    def _push(self) -> None:
        self._pushing = False
        self.table.expire(time.monotonic())
        if self.table.version == self._sent:
            return
        snapshot = self.table.snapshot()
        self._sent = snapshot.version
        self.link.push(snapshot)
        if self.link.applied >= 0:  # not the first, which waits for the workers to start
            spawn(self._time_push(snapshot.version, time.monotonic()), name="router-push-timing")

    async def _time_push(self, version: int, started: float) -> None:
        if await self.link.served(version, SETTLE_TIMEOUT_S):
            self.push_times.append((self.clock(), time.monotonic() - started))

    async def settle(self) -> bool:
        """Push now and wait until every worker serves the table as it is."""
        if self._held:
            return True  # nothing is pushed yet: the router serves what it served
        if self.link.hello is None:
            return False  # no router was ever reached (an app built for tests, nothing started)
        self._push()
        return await self.link.served(self.table.version, SETTLE_TIMEOUT_S)

    async def drain(self, replica: Replica) -> None:
        """Out of rotation on every worker, its requests in flight done (or the drain time up), before it stops."""
        if replica.process is None or replica.service not in self.table.services:
            return
        address = f"{replica.process.host}:{replica.process.port}"
        if not self.link.view.present(replica.service, address) and self.table.entry(replica.service, address) is None:
            return  # never routed (it was not ready yet)
        timeout = self.table.settings.drain_timeout_s
        with contextlib.suppress(LookupError):
            self.table.drain(replica.service, address, timeout, time.monotonic())
        await self.settle()
        if not await self.link.wait(lambda: not self.link.view.present(replica.service, address), timeout + 1):
            log.warning("replica %s still had requests after %.0f s of draining", replica.id, timeout)
        self.table.forget_drained(replica.service, address)
        self.push()

    # -- what it shows --------------------------------------------------------------------------------------------

    def endpoints(self, service: str | None = None) -> list[dict[str, Any]]:
        """Every endpoint, as `ServerOut`: what the workers report, or what the table wants if none reported yet."""
        shown: list[dict[str, Any]] = []
        names = [service] if service is not None else list(self.table.services)
        for name in names:
            for entry in self.table.entries(name):
                shown.append(self.endpoint(name, entry.address))
            wanted = {e.address for e in self.table.entries(name)}
            for record in self.link.view.routed(name):
                if record.address not in wanted:
                    shown.append(endpoint_out(record))  # still draining on a worker
        return shown

    def endpoint(self, service: str, address: str) -> dict[str, Any]:
        record = self.link.view.endpoints.get((service, address)) or EndpointRecord(service, address)
        shown = endpoint_out(record)
        entry = self.table.entry(service, address)
        if entry is not None:
            shown.update(source=entry.source, replica=entry.replica or None, weight=entry.weight)
            if entry.draining:
                shown["state"] = "draining"
            elif not record.present:
                shown["state"] = "active"  # not reported by the workers yet
        return shown

    def next_server(self, service: str) -> dict[str, Any] | None:
        """The endpoint the next request would go to: the service's balancer over the endpoints every worker
        reports available. Each worker balances on its own, so this is the pick of a worker that starts now."""
        spec = self.table.services[service]
        candidates = []
        for record in self.link.view.routed(service):
            gauges = record.gauges or {}
            if gauges.get("state") == "active" and not gauges.get("ejected") and gauges.get("breaker") != "open":
                candidates.append(Target(record.address, int(gauges.get("weight", 0)), since=float("-inf")))
        balancer = make_balancer(spec.balance.algorithm, lambda: 0.0, 0.0)
        target = balancer.peek(candidates, 0.0, None) if candidates else None
        return self.endpoint(service, target.key) if target is not None else None

    def _record_event(self, message: dict[str, Any]) -> None:
        service = str(message.get("service", ""))
        address = str(message.get("address", ""))
        subject = f"{service}/{address}" if address else "router"
        event = Event(str(message["kind"]), subject, str(message["message"]), service or None, self.clock())
        spawn(self.supervisor.record(event), name=f"record:{event.kind}")
