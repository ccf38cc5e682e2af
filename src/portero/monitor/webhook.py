"""Delivery of notifications to webhook receivers: one bounded queue and one named sender task per receiver.

Evaluation only ever calls `submit`, which never waits: when a receiver is down its queue fills up and the
oldest notification is dropped (and counted), so a failing receiver cannot slow the monitor or the others.
Each notification is retried with exponential backoff (0.5 s doubling, at most 30 s) up to the receiver's
`max_attempts`; a 4xx answer other than 408 and 429 is final (retrying the same body cannot help).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque

import httpx

from portero import __version__
from portero.monitor.notify import Notification, Receiver
from portero.tasks import settle, spawn

log = logging.getLogger(__name__)
QUEUE_MAX = 64
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
RETRYABLE_4XX = frozenset({408, 429})


class Sender:
    def __init__(self, receiver: Receiver, client: httpx.AsyncClient, outcomes: Counter[tuple[str, str]]) -> None:
        self.receiver = receiver
        self.client = client
        self.outcomes = outcomes  # (receiver, "sent" | "failed" | "dropped") -> count; shared by all senders
        self.queue: deque[Notification] = deque()
        self._ready = asyncio.Event()
        self._busy = False
        self._task = spawn(self._run(), name=f"webhook:{receiver.name}", eternal=True)

    def submit(self, notification: Notification) -> None:
        if len(self.queue) >= QUEUE_MAX:
            self.queue.popleft()
            self.outcomes[(self.receiver.name, "dropped")] += 1
            log.warning("webhook %s is behind: dropped its oldest notification", self.receiver.name)
        self.queue.append(notification)
        self._ready.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self.queue:
                notification = self.queue.popleft()
                self._busy = True
                try:
                    ok = await self.deliver(notification)
                finally:
                    self._busy = False
                self.outcomes[(self.receiver.name, "sent" if ok else "failed")] += 1

    async def deliver(self, notification: Notification) -> bool:
        hook = self.receiver.webhook
        delay = BACKOFF_INITIAL_S
        headers = {"user-agent": f"portero/{__version__}"}
        for attempt in range(1, hook.max_attempts + 1):
            try:
                response = await self.client.post(
                    hook.url, json=notification.payload, timeout=hook.timeout_s, headers=headers
                )
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
                    break
            if attempt < hook.max_attempts:
                log.info(
                    "webhook %s attempt %d failed (%s); retry in %.1f s", self.receiver.name, attempt, problem, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        log.error(
            "webhook %s: notification %s not delivered: %s",
            self.receiver.name,
            notification.describe(),
            problem,
            extra={"receiver": self.receiver.name},
        )
        return False

    async def close(self, grace_s: float) -> None:
        """Give queued notifications `grace_s` to go out (a resolved one at shutdown, say), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while self.queue or self._busy:  # noqa: ASYNC110 - the sender drains it; a deadline bounds the wait
                    await asyncio.sleep(0.05)
        settle(self._task)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Senders:
    """The senders of the current receivers: added, kept or closed as the spec changes."""

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(trust_env=False)
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.by_name: dict[str, Sender] = {}

    async def configure(self, receivers: list[Receiver]) -> None:
        wanted = {r.name: r for r in receivers}
        for name, sender in list(self.by_name.items()):
            if wanted.get(name) != sender.receiver:
                del self.by_name[name]
                await sender.close(0)
        for name, receiver in wanted.items():
            if name not in self.by_name:
                self.by_name[name] = Sender(receiver, self.client, self.outcomes)

    def submit(self, notification: Notification) -> None:
        sender = self.by_name.get(notification.receiver.name)
        if sender is not None:
            sender.submit(notification)

    async def close(self, grace_s: float) -> None:
        await asyncio.gather(*(s.close(grace_s) for s in self.by_name.values()))
        self.by_name.clear()
        await self.client.aclose()
