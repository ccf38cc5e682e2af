"""Runs HTTP checks concurrently without ever blocking the supervisor's tick on a slow replica."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx

from portero.health import USER_AGENT
from portero.replicas import Process, Replica
from portero.spec.models import HealthCheck
from portero.tasks import spawn

log = logging.getLogger(__name__)


EngineCheck = Callable[[str, Process], Awaitable[bool | None]]  # a runtime's own verdict; None: check over HTTP


class Prober:
    def __init__(self, engine_check: EngineCheck | None = None) -> None:
        headers = {"User-Agent": USER_AGENT}
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, headers=headers)
        self._engine_check = engine_check
        self._inflight: dict[str, asyncio.Task[bool]] = {}
        self._last: dict[str, float] = {}

    def last_probe_at(self, replica_id: str) -> float | None:
        return self._last.get(replica_id)

    def launch(self, replica: Replica, policy: HealthCheck, now: float) -> None:
        if replica.id in self._inflight or replica.process is None:
            return
        url = f"http://{replica.process.host}:{replica.process.port}{policy.path}"
        self._last[replica.id] = now
        check = self._check(url, policy.timeout_s, replica.id, replica.process)
        self._inflight[replica.id] = spawn(check, name=f"probe:{replica.id}")

    async def _check(self, url: str, timeout_s: float, replica_id: str = "", process: Process | None = None) -> bool:
        if self._engine_check is not None and process is not None:
            try:
                verdict = await asyncio.wait_for(self._engine_check(replica_id, process), timeout_s)
            except Exception:  # the engine could not say: the HTTP check decides this time
                verdict = None
            if verdict is not None:
                return verdict
        try:
            response = await self._client.get(url, timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400

    def collect(self) -> dict[str, bool]:
        done = {rid: task for rid, task in self._inflight.items() if task.done()}
        for rid in done:
            del self._inflight[rid]
        return {
            rid: (not task.cancelled()) and task.exception() is None and task.result() for rid, task in done.items()
        }

    def forget(self, replica_id: str) -> None:
        task = self._inflight.pop(replica_id, None)
        if task is not None:
            task.cancel()
        self._last.pop(replica_id, None)

    async def close(self) -> None:
        for task in self._inflight.values():
            task.cancel()
        await self._client.aclose()
