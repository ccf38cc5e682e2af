"""Keep-alive load in the background of a test, on the wall clock portero's events use; and what a deployment's
tests measure from it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import httpx

from portero.loadgen import LoadReport, run_load
from tests.integration.portero_cli import Portero


class Loaded:
    """`concurrency` keep-alive clients on `url` from entering the block until `stop()` (or its end)."""

    def __init__(self, url: str, *, concurrency: int = 4, pause_s: float = 0.0, duration_s: float = 300) -> None:
        self.url = url
        self.concurrency = concurrency
        self.pause_s = pause_s
        self.duration_s = duration_s
        self._stop = asyncio.Event()
        self._task: asyncio.Future[LoadReport] | None = None
        self.started_wall = 0.0
        self._report: LoadReport | None = None

    async def __aenter__(self) -> Loaded:
        self.started_wall = time.time()
        self._task = asyncio.ensure_future(
            run_load(
                self.url,
                concurrency=self.concurrency,
                duration_s=self.duration_s,
                stop=self._stop,
                pause_s=self.pause_s,
            )
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> LoadReport:
        if self._report is None:
            assert self._task is not None
            self._stop.set()
            self._report = await self._task
        return self._report

    @property
    def report(self) -> LoadReport:
        assert self._report is not None, "the load has not stopped yet"
        return self._report

    def sent_wall(self) -> list[float]:
        """When each request of the timeline was sent, on the wall clock (time.time())."""
        return [self.started_wall + sent for sent, _, _, _ in self.report.timeline]


async def deploy(portero: Portero, body: dict[str, Any], *, deadline_s: float = 90) -> dict[str, Any]:
    """POST /deploy and wait for the deployment's end; its last record."""
    async with httpx.AsyncClient(trust_env=False, auth=portero.auth, timeout=10) as client:
        started = await client.post(f"{portero.url}/deploy", json={"service": "portal", **body})
        assert started.status_code == 202, started.text
        return await ended(portero, started.json()["id"], deadline_s=deadline_s)


async def ended(portero: Portero, deployment_id: str, *, deadline_s: float = 90) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False, auth=portero.auth, timeout=10) as client:
        deadline = time.monotonic() + deadline_s
        while True:
            d: dict[str, Any] = (await client.get(f"{portero.url}/deployments/{deployment_id}")).json()
            if d["state"] != "running":
                return d
            assert time.monotonic() < deadline, d
            await asyncio.sleep(0.2)


def routable(events: Iterable[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """When each replica was in rotation: from `replica.ready` to its retirement (or for ever)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    since: dict[str, float] = {}
    for event in sorted(events, key=lambda e: e["at"]):
        replica = event["subject"]
        if event["kind"] == "replica.ready":
            since.setdefault(replica, event["at"])
        elif event["kind"] in ("replica.retiring", "replica.unhealthy", "replica.removed") and replica in since:
            spans.setdefault(replica, []).append((since.pop(replica), event["at"]))
    for replica, start in since.items():
        spans.setdefault(replica, []).append((start, float("inf")))
    return spans


def shares(
    sent: list[float], answered_by: list[str], spans: dict[str, list[tuple[float, float]]], start: float, end: float
) -> tuple[Counter[str], dict[str, float]]:
    """Requests sent in [start, end): how many each replica answered, and how many it should have with equal
    weights (each request's 1/n to each of the n replicas in rotation when it was sent)."""
    actual: Counter[str] = Counter()
    expected: dict[str, float] = {}
    for at, replica in zip(sent, answered_by, strict=True):
        if not start <= at < end:
            continue
        actual[replica] += 1
        members = [r for r, ranges in spans.items() if any(a <= at < b for a, b in ranges)]
        for member in members:
            expected[member] = expected.get(member, 0.0) + 1 / len(members)
    return actual, expected
