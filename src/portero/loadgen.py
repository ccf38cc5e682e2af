"""A small built-in load generator: keep-alive clients that record every outcome, for tests, benchmarks and
demos (`portero load`). Not a replacement for wrk: it measures correctness under load, not peak speed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadReport:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)  # X-App-Version of the responses
    latencies_s: list[float] = field(default_factory=list)
    timeline: list[tuple[float, int, str]] = field(default_factory=list)  # (seconds since start, status, version)
    duration_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run_load(
    url: str,
    *,
    concurrency: int = 8,
    duration_s: float = 5.0,
    stop: asyncio.Event | None = None,
    timeout_s: float = 10.0,
    pause_s: float = 0.0,
) -> LoadReport:
    """`concurrency` keep-alive clients GET `url` until `duration_s` passes or `stop` is set."""
    report = LoadReport()
    start = time.monotonic()
    end = start + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s, trust_env=False) as client:

        async def worker() -> None:
            while time.monotonic() < end and not (stop is not None and stop.is_set()):
                sent_at = time.monotonic()
                report.sent += 1
                try:
                    response = await client.get(url)
                except httpx.HTTPError as exc:
                    report.failed += 1
                    report.errors[type(exc).__name__] += 1
                    report.timeline.append((sent_at - start, 0, ""))
                    continue
                report.latencies_s.append(time.monotonic() - sent_at)
                report.statuses[response.status_code] += 1
                version = response.headers.get("x-app-version", "")
                report.versions[version] += 1
                report.timeline.append((sent_at - start, response.status_code, version))
                if response.status_code < 500:
                    report.ok += 1
                else:
                    report.failed += 1
                    report.errors[response.text[:120].strip()] += 1  # the router says why in its body
                if pause_s:
                    await asyncio.sleep(pause_s)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.duration_s = time.monotonic() - start
    return report
