"""Scrape the replicas' own metrics endpoints (`services.<name>.metrics`), each on its own interval.

Every monitor pass asks for the scrapes that are due, runs them at once (each with its timeout), and hands back
what they read; a replica whose scrape fails keeps its series until they age out, and says why in its status.
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
        self._client: httpx.AsyncClient | None = None

    async def scrape(self, now: float) -> list[ScrapeResult]:
        due: list[tuple[Replica, MetricsScrape]] = []
        running: set[str] = set()
        for replica in self.control.supervisor.replicas:
            service = self.control.spec.services.get(replica.service)
            settings = service.metrics if service is not None else None
            if settings is None or not replica.running or replica.process is None:
                continue
            running.add(replica.id)
            last = self.status.get(replica.id)
            if last is None or now - last.at >= settings.interval_s - 0.05:  # a pass may land a little early
                due.append((replica, settings))
        for gone in set(self.status) - running:
            self.status.pop(gone, None)
            self.latest.pop(gone, None)
        if not due:
            return []
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False)
        results = await asyncio.gather(*(self._one(r, s, now) for r, s in due))
        for result in results:
            self.status[result.status.replica] = result.status
            if result.status.ok:
                self.latest[result.status.replica] = result.samples
        return results

    async def _one(self, replica: Replica, settings: MetricsScrape, now: float) -> ScrapeResult:
        assert replica.process is not None
        url = f"http://{replica.process.host}:{replica.process.port}{settings.path}"
        began = time.perf_counter()

        def status(ok: bool, series: int = 0, dropped: int = 0, error: str | None = None) -> ScrapeStatus:
            took = round(time.perf_counter() - began, 4)
            return ScrapeStatus(replica.service, replica.id, url, now, ok, series, dropped, took, error)

        try:
            assert self._client is not None
            response = await self._client.get(url, timeout=settings.timeout_s)
            if response.status_code != 200:
                return ScrapeResult(status(False, error=f"HTTP {response.status_code}"), [])
            if len(response.content) > MAX_BODY_BYTES:
                return ScrapeResult(status(False, error=f"body over {MAX_BODY_BYTES} bytes"), [])
            parsed = parse(response.text, replica.service, replica.id, settings.max_series)
        except httpx.HTTPError as exc:
            return ScrapeResult(status(False, error=f"{type(exc).__name__}: {exc}".rstrip(": ")), [])
        except ValueError as exc:
            return ScrapeResult(status(False, error=f"not Prometheus text: {exc}"), [])
        return ScrapeResult(status(True, len(parsed.samples), parsed.dropped), parsed.samples)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
