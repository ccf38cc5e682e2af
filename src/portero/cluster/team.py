"""This portero among others on one Redis: the election, its hooks, and the registry's sync, wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING

from portero.cluster.leader import Election
from portero.cluster.lease import Timing
from portero.cluster.roles import Controllers
from portero.cluster.sync import Sync
from portero.cluster.tokens import TokenShare
from portero.control import ControlPlane
from portero.spec.models import Spec
from portero.store.base import StaleLeader, StoreUnavailable
from portero.store.redis import RedisStore
from portero.tasks import settle, spawn
from portero.tokens import TokenSet

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from portero.dataplane.plane import DataPlane
    from portero.monitor.monitor import Monitor


class Team:
    """This portero among others on one Redis: the election, its hooks, and the registry's sync."""

    def __init__(
        self,
        spec: Spec,
        store: RedisStore,
        control: ControlPlane,
        plane: DataPlane | None,
        source: str,
        *,
        tokens: TokenSet | None = None,
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
        self.sync = Sync(store, control, plane)
        self.controllers.servers = self.sync.registered
        store.on_stale = self._stale
        control.desired.observers.append(self._share_traffic)
        self.control = control
        self.store = store
        self.tokens = tokens
        self._tasks: list[asyncio.Task[None]] = []
        self._traffic: asyncio.Task[None] | None = None
        self._shared: dict[str, dict[int, float]] = {}

    def _share_traffic(self) -> None:
        """A deployment moved traffic: the other routers split it the same way (written in order, by the leader)."""
        split = self.control.desired.traffic
        if self.election.leading and split != self._shared:
            self._shared = split
            self._traffic = spawn(self._write_traffic(self._traffic, split), name="share-traffic")

    async def _write_traffic(self, previous: asyncio.Task[None] | None, split: dict[str, dict[int, float]]) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        try:
            await self.store.put_traffic(split)
        except (StoreUnavailable, StaleLeader) as exc:
            log.warning("traffic split not shared with the other porteros: %s", exc)

    def _stale(self) -> None:
        if self.election.leading:
            spawn(self.election.step_down("a write under its fencing token was refused"), name="step-down")

    def watch(self, monitor: Monitor) -> None:
        store, election = self.store, self.election
        monitor.store_up = lambda: store.up
        monitor.telling = lambda: election.leading

    async def start(self) -> None:
        """A first look at the lease before the API answers: a portero that can lead at once does."""
        await self.election.step()
        if not self.election.leading:
            with contextlib.suppress(StoreUnavailable):
                await self.sync.resync()  # a follower shows the leader's services from its first answer
        self._tasks = [
            spawn(self.election.run(), name="leader-election", eternal=True),
            spawn(self.sync.run(), name="registry-sync", eternal=True),
        ]
        if self.tokens is not None:
            share = TokenShare(self.store, self.tokens, self.identity)
            self._tasks.append(spawn(share.run(), name="token-share", eternal=True))

    async def leave(self) -> None:
        """The last portero stops the replicas, as a single one does; any other leaves them running for the
        next leader to adopt, and gives the lease back at once so that nobody waits for it to expire."""
        leading = self.election.leading
        try:
            others = set(await self.election.members()) - {self.identity}
        except StoreUnavailable:
            others = {"?"}  # cannot tell: leaving the replicas running loses nothing
        await self.election.step_down("portero stopping")
        with contextlib.suppress(StoreUnavailable):
            await self.election.absent()
        for task in self._tasks:
            settle(task)
            task.cancel()
        if leading and not others:
            await self.control.shutdown()
        else:
            if leading:
                log.warning("other porteros run (%s): the replicas keep running for the next leader", ", ".join(others))
            await self.control.supervisor.detach()
