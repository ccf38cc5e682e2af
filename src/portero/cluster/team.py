"""This portero among others on one Redis: the election, its hooks, and the registry's sync, wired together."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import TYPE_CHECKING

from portero.cluster.leader import Election
from portero.cluster.lease import Timing
from portero.cluster.roles import Controllers
from portero.cluster.sync import Sync
from portero.control import ControlPlane
from portero.spec.models import Spec
from portero.store.redis import RedisStore
from portero.tasks import settle, spawn

if TYPE_CHECKING:
    from portero.monitor.monitor import Monitor
    from portero.router.server import Router


class Team:
    """This portero among others on one Redis: the election, its hooks, and the registry's sync."""

    def __init__(
        self, spec: Spec, store: RedisStore, control: ControlPlane, router: Router | None, source: str
    ) -> None:
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        store.origin = self.identity
        control.supervisor.acting = False  # until this portero leads
        control.announce = store.publish
        settings = spec.store
        timing = Timing(settings.lease_s, settings.renew_every_s, settings.acquire_every_s)
        self.election = Election(store, self.identity, spec.admin.url, timing)
        self.controllers = Controllers(control, store, source, self.identity)
        self.election.on_lead.append(self.controllers.lead)
        self.election.on_follow.append(self.controllers.follow)
        self.sync = Sync(store, control, router)
        self.control = control
        self.store = store
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, monitor: Monitor) -> None:
        store, election = self.store, self.election
        monitor.store_up = lambda: store.up
        monitor.telling = lambda: election.leading

    def start(self) -> None:
        self._tasks = [
            spawn(self.election.run(), name="leader-election", eternal=True),
            spawn(self.sync.run(), name="registry-sync", eternal=True),
        ]

    async def leave(self) -> None:
        """Give the lease back at once (another portero takes over without waiting for it to expire)."""
        await self.election.step_down("portero stopping")
        for task in self._tasks:
            settle(task)
            task.cancel()
        await self.control.supervisor.detach()
