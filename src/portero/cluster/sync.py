"""Keeps this portero in step with the others through Redis: registered servers by message and by full resync
(on every (re)subscription and every `RESYNC_S`, so that a missed message cannot leave two routers apart), and,
while another portero leads, the leader's services and replicas, which this router then routes to.

When Redis is away nothing here changes the router: it keeps routing with the last registry it knew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from portero.cluster import registry
from portero.cluster.leader import ensure_not_cancelled
from portero.cluster.local import local
from portero.cluster.registry import Deregister, Drain, Register, Reweight, ServerOp, Undrain
from portero.control import ControlPlane
from portero.dataplane.plane import DataPlane
from portero.desired import Load
from portero.spec.models import Spec
from portero.store.base import ServerRecord, StoreUnavailable
from portero.store.redis import RedisStore

log = logging.getLogger(__name__)
RESYNC_S = 2.0  # a full resync even without messages: the safety net under pub/sub
POLL_S = 0.25  # longest wait for a message (under the client's socket timeout)
RETRY_S = 0.5


class Sync:
    def __init__(self, store: RedisStore, control: ControlPlane, plane: DataPlane | None) -> None:
        self.store = store
        self.control = control
        self.plane = plane
        self.connected = asyncio.Event()  # subscribed and resynced (tests wait on it)
        self.applied = 0  # messages from other porteros applied
        self._seen_state = False
        self._spec: dict[str, Any] | None = None  # the stored spec this portero last followed

    async def run(self) -> None:
        warned = False
        while True:
            ensure_not_cancelled()
            pubsub = self.store.client.pubsub()
            try:
                await pubsub.subscribe(self.store.keys.changes)
                await self.resync()
                self.connected.set()
                if warned:
                    log.warning("Redis answers again: registry resynced, following the others again")
                warned = False
                await self._listen(pubsub)
            except Exception as exc:  # whatever broke, the next subscription starts over
                if not isinstance(exc, RedisError | OSError | StoreUnavailable):
                    log.exception("registry sync failed; resubscribing")
                self.connected.clear()
                self.store.up = False
                if not warned:
                    log.warning("Redis does not answer (%s): routing on with the last known registry", exc)
                warned = True
                await asyncio.sleep(RETRY_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _listen(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + RESYNC_S
        while True:
            ensure_not_cancelled()
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
            if message is not None and message.get("type") == "message":
                await self.handle(json.loads(message["data"]))
            if loop.time() >= next_resync:
                await self.resync()
                next_resync = loop.time() + RESYNC_S

    async def handle(self, message: dict[str, Any]) -> None:
        if message.get("origin") == self.store.origin:
            return  # this portero's own change: applied before it was published
        op = registry.from_message(message)
        if op is not None:
            self._apply(op)
            self.applied += 1
        elif message.get("kind") == "state":
            await self.mirror()

    async def resync(self) -> None:
        if await self.store.get_spec() is None:
            if self._seen_state:
                log.warning("Redis holds no state (restarted empty?): routing on as before until a leader restores it")
            return
        self._seen_state = True
        if self.plane is not None:
            stored = {(s.service, s.address): s.weight for s in await self.store.get_servers()}
            for op in registry.diff(self._routed(), stored):
                self._apply(op)
        await self.mirror()

    def registered(self) -> list[ServerRecord]:
        return [ServerRecord(service, address, weight) for (service, address), weight in self._routed().items()]

    def _routed(self) -> dict[registry.Key, int]:
        if self.plane is None:
            return {}
        table = self.plane.table
        return {key: weight for key, weight in table.registered.items() if key not in table.draining}

    def _apply(self, op: ServerOp) -> None:
        plane = self.plane
        if plane is None or op.service not in plane.table.services:
            return
        table = plane.table
        try:
            if isinstance(op, Register):
                table.register(op.service, op.address, op.weight)
            elif isinstance(op, Deregister):
                if (op.service, op.address) not in table.draining:
                    table.deregister(op.service, op.address, time.monotonic())
            elif isinstance(op, Reweight):
                table.reweight(op.service, op.address, op.weight)
            elif isinstance(op, Drain):
                timeout = op.timeout_s if op.timeout_s is not None else table.settings.drain_timeout_s
                table.drain(op.service, op.address, timeout, time.monotonic())
            elif isinstance(op, Undrain):
                table.undrain(op.service, op.address)
        except (LookupError, ValueError) as exc:
            log.debug("registry change %s not applied here: %s", op, exc)
        plane.push()

    def _follow_spec(self, body: dict[str, Any]) -> None:
        """The leader applied another spec: routes, router and monitor settings follow it here too."""
        try:
            spec = Spec.model_validate(body, strict=False)
        except ValueError:
            log.exception("the spec in Redis does not parse here (another portero version?); keeping this one")
            return
        self._spec = body
        spec = local(spec, self.control.spec)
        if spec == self.control.spec:
            return
        self.control.spec = spec
        for hook in self.control.on_applied:
            hook(spec)
        log.info("following the spec the leader applied")

    async def mirror(self) -> None:
        """While another portero leads: its services and replicas become this one's view and routes."""
        supervisor = self.control.supervisor
        if supervisor.acting:
            return
        stored = await self.store.get_spec()
        records = await self.store.get_services()
        replicas = await self.store.load_replicas()
        traffic = await self.store.get_traffic()
        if stored is None or not records:
            return  # nothing decided yet, or Redis came back empty: the last known view stays
        async with supervisor.lock:
            if supervisor.acting:
                return  # it took the lead meanwhile: its own adoption is newer
            if stored[1] != self._spec:
                self._follow_spec(stored[1])
            known = {name: r for name, r in records.items() if name in self.control.spec.services}
            await self.control.desired.apply(Load(known, traffic))
            supervisor.replicas = replicas
            for observer in supervisor.observers:
                observer(replicas)
