"""What leading means: taking over the controllers (the store's state, the replicas the last leader left, the
deployments it left half-done) and pausing them again. The election's hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable

from portero.cluster.local import local
from portero.control import KEEP_REVISIONS, ControlPlane
from portero.desired import DropHolds
from portero.events import Event
from portero.revisions import Revision
from portero.spec.models import Spec
from portero.store.base import ServerRecord
from portero.store.redis import RedisStore

log = logging.getLogger(__name__)


class Controllers:
    def __init__(self, control: ControlPlane, store: RedisStore, source: str, identity: str) -> None:
        self.control = control
        self.store = store
        self.source = source
        self.identity = identity
        self.terms = 0  # how many times this portero took the lead
        self.servers: Callable[[], list[ServerRecord]] = list  # the router's registered servers, for `restore`

    async def lead(self, token: int) -> None:
        """The first time, this portero applies its own file (as `portero up` does; an unchanged file changes
        nothing); later, the spec in the store, which the API may have changed since."""
        control = self.control
        self.store.fence = token
        source = self.source
        stored = await self.store.get_spec()
        if stored is None and control.records:
            await self.restore(source)  # Redis came back empty: what this portero knows is the best there is
        elif stored is not None and self.terms > 0:
            source = stored[0]
            control.spec = local(Spec.model_validate(stored[1], strict=False), control.spec)
        self.terms += 1
        await control.deployer.recover()  # a deployment the last leader left running ends as aborted
        await control.desired.apply(DropHolds())  # and its traffic split with it: the serving revision takes it all
        await self.store.put_traffic({})
        await control.start(source)
        control.supervisor.acting = True
        control.supervisor.wake()
        message = f"{self.identity} leads with fencing token {token}"
        await control.supervisor.record(Event("leader.elected", self.identity, message, at=control.clock()))

    async def restore(self, source: str) -> None:
        """Write back what this portero knows (it led, or mirrored the leader): the spec, services, revisions it
        has templates of, replicas and registered servers. Without this, an empty Redis (restarted without
        persistence) would make the new leader forget and reap every running replica."""
        control, store = self.control, self.store
        log.warning("Redis holds no state (restarted without persistence?): restoring it from this portero")
        await store.put_spec(source, control.spec.model_dump(mode="json"))
        for record in control.records.values():
            await store.put_service(record)
        for (name, number), template in sorted(control.supervisor.templates.items()):
            revision = Revision(
                name,
                number,
                template.template_digest(),
                template.model_dump(mode="json"),
                control.clock(),
                "restored after Redis lost its data",
            )
            await store.add_revision(revision, keep=KEEP_REVISIONS)
        await store.save_replicas(control.supervisor.replicas)
        for server in self.servers():
            await store.put_server(server)
        count = len(control.supervisor.replicas)
        message = f"Redis held no state; restored {len(control.records)} service(s) and {count} replica(s)"
        await control.supervisor.record(Event("store.restored", self.identity, message, at=control.clock()))

    async def follow(self, reason: str) -> None:
        """Pause: the pass in progress ends first; replicas keep running for the next leader to adopt."""
        control = self.control
        await control.supervisor.pause()
        control.deployer.stand_down()
        await control.desired.apply(DropHolds())
        message = f"{self.identity} stopped leading: {reason}"
        await control.supervisor.record(Event("leader.lost", self.identity, message, at=control.clock()))
