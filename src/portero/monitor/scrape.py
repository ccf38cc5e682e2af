"""Scrape the replicas' own metrics endpoints (`services.<name>.metrics`), each on its own interval.

Every monitor pass collects the scrapes that finished (their samples are recorded then) and starts those that are
due, each in its own task with its timeout; a replica whose scrape fails keeps its series until they age out, and
says why in its status.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from portero.control import ControlPlane
from portero.monitor.appmetrics import AppSample, ScrapeStatus, parse
from portero.replicas import Replica
from portero.spec.models import MetricsScrape
from portero.tasks import spawn

MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ScrapeResult:
    status: ScrapeStatus
    samples: list[AppSample]


class Scraper:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.status: dict[str, ScrapeStatus] = {}  # by replica id, the last scrape of each running replica
        self.latest: dict[str, list[AppSample]] = {}  # by replica id, what its last good scrape read
        self._inflight: dict[str, asyncio.Task[ScrapeResult]] = {}
        self._started: dict[str, float] = {}  # by replica id, when its last scrape began
        self._client: httpx.AsyncClient | None = None

    def poll(self, now: float) -> list[ScrapeResult]:
        """The scrapes that finished since the last pass; starts those that are due. Scrapes run in tasks of their
        own, so that a slow replica (its only worker busy, say) never holds up the monitor's pass."""
        results = self._finished()
        running: set[str] = set()
        for replica in self.control.supervisor.replicas:
            service = self.control.spec.services.get(replica.service)
            settings = service.metrics if service is not None else None
            if settings is None or not replica.running or replica.process is None:
                continue
            running.add(replica.id)
            began = self._started.get(replica.id)
            due = began is None or now - began >= settings.interval_s - 0.05  # a pass may land a little early
            if due and replica.id not in self._inflight:
                self._started[replica.id] = now
                if self._client is None:
                    self._client = httpx.AsyncClient(trust_env=False)
                self._inflight[replica.id] = spawn(self._one(replica, settings, now), name=f"scrape:{replica.id}")
        for gone in set(self._started) - running:
            for book in (self.status, self.latest, self._started):
                book.pop(gone, None)
            task = self._inflight.pop(gone, None)
            if task is not None:
                task.cancel()
        return results

    def _finished(self) -> list[ScrapeResult]:
        results = []
        for replica, task in list(self._inflight.items()):
            if not task.done():
                continue
            del self._inflight[replica]
            if task.cancelled() or task.exception() is not None:
                continue
            result = task.result()
            results.append(result)
            self.status[replica] = result.status
            if result.status.ok:
                self.latest[replica] = result.samples
        return results

    async def _one(self, replica: Replica, settings: MetricsScrape, now: float) -> ScrapeResult:
        assert replica.process is not None
        url = f"http://{replica.process.host}:{replica.process.port}{settings.path}"
        began = time.perf_counter()

        def status(*, ok: bool, series: int = 0, dropped: int = 0, error: str | None = None) -> ScrapeStatus:
            took = round(time.perf_counter() - began, 4)
            return ScrapeStatus(replica.service, replica.id, url, now, ok, series, dropped, took, error)

        try:
            assert self._client is not None
            response = await self._client.get(url, timeout=settings.timeout_s)
            if response.status_code != 200:
                return ScrapeResult(status(ok=False, error=f"HTTP {response.status_code}"), [])
            if len(response.content) > MAX_BODY_BYTES:
                return ScrapeResult(status(ok=False, error=f"body over {MAX_BODY_BYTES} bytes"), [])
            parsed = parse(response.text, replica.service, replica.id, settings.max_series)
        except httpx.HTTPError as exc:
            return ScrapeResult(status(ok=False, error=f"{type(exc).__name__}: {exc}".rstrip(": ")), [])
        except ValueError as exc:
            return ScrapeResult(status(ok=False, error=f"not Prometheus text: {exc}"), [])
        return ScrapeResult(status(ok=True, series=len(parsed.samples), dropped=parsed.dropped), parsed.samples)

    async def close(self) -> None:
        for task in self._inflight.values():
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
