"""What leading means: taking over the controllers (the store's state, the replicas the last leader left, the
deployments it left half-done) and pausing them again. The election's hooks."""

from __future__ import annotations

import logging

from portero.control import ControlPlane
from portero.events import Event
from portero.spec.models import Spec
from portero.store.redis import RedisStore

log = logging.getLogger(__name__)


class Controllers:
    def __init__(self, control: ControlPlane, store: RedisStore, source: str, identity: str) -> None:
        self.control = control
        self.store = store
        self.source = source
        self.identity = identity
        self.terms = 0  # how many times this portero took the lead

    async def lead(self, token: int) -> None:
        """The first time, this portero applies its own file (as `portero up` does; an unchanged file changes
        nothing); later, the spec in the store, which the API may have changed since."""
        control = self.control
        self.store.fence = token
        source = self.source
        if self.terms > 0:
            stored = await self.store.get_spec()
            if stored is not None:
                source = stored[0]
                control.spec = Spec.model_validate(stored[1], strict=False)
        self.terms += 1
        await control.start(source)
        if control.deployer is not None:
            control.deployer.active.clear()
            await control.deployer.recover()  # a deployment the last leader left running ends as aborted
        control.supervisor.acting = True
        control.supervisor.wake()
        message = f"{self.identity} leads with fencing token {token}"
        await control.supervisor.record(Event("leader.elected", self.identity, message, at=control.clock()))

    async def follow(self, reason: str) -> None:
        """Pause: the pass in progress ends first; replicas keep running for the next leader to adopt."""
        control = self.control
        control.supervisor.acting = False
        async with control.supervisor.lock:
            pass
        if control.deployer is not None:
            control.deployer.active.clear()
        control.traffic.clear()
        message = f"{self.identity} stopped leading: {reason}"
        await control.supervisor.record(Event("leader.lost", self.identity, message, at=control.clock()))
