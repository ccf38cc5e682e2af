"""pybreaker's state machine and storage, driven by an injected clock and shared by sync and async calls.

Why not `CircuitBreaker.call` around the real call: it holds the breaker's lock for the whole call (every thread
queues behind one slow call), and its async path is tornado's: a coroutine handed to it "succeeds" the moment it
is created. So a call is *admitted* first (the state is read; an open breaker with time left refuses it), runs
without any lock, and its outcome is *reported* after, replayed through `CircuitBreaker.call` so that pybreaker's
own transitions, counters and listeners decide what it means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pybreaker
import redis

from portero.resilience.clock import Clock

log = logging.getLogger(__name__)
CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
STATES = (CLOSED, HALF_OPEN, OPEN)
REDIS_TIMEOUT_S = 0.25  # a slow Redis must not turn a fast refusal into a slow one; pybreaker then assumes closed


class BreakerOpen(Exception):
    """The breaker refused the call without trying it; `retry_in_s` until a trial call is let through."""

    def __init__(self, name: str, retry_in_s: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open: the call was not attempted (trial in {retry_in_s:.1f} s)")
        self.name = name
        self.retry_in_s = retry_in_s


class ClockStorage(pybreaker.CircuitBreakerStorage):
    """A pybreaker storage (memory or Redis) whose `opened_at` is kept in the injected clock's time.

    pybreaker compares `opened_at + reset_timeout` with `datetime.now(UTC)`. The getter answers the real now minus
    the time elapsed on the injected clock, so that comparison is `elapsed < reset_timeout` in the clock's time:
    a fake clock drives reset timeouts without patching pybreaker's module.
    """

    def __init__(self, inner: pybreaker.CircuitBreakerStorage, clock: Clock) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.clock = clock

    @property
    def state(self) -> str:
        return self.inner.state

    @state.setter
    def state(self, state: str) -> None:
        self.inner.state = state

    def increment_counter(self) -> None:
        self.inner.increment_counter()

    def reset_counter(self) -> None:
        self.inner.reset_counter()

    def increment_success_counter(self) -> None:
        self.inner.increment_success_counter()

    def reset_success_counter(self) -> None:
        self.inner.reset_success_counter()

    @property
    def counter(self) -> int:
        return self.inner.counter

    @property
    def success_counter(self) -> int:
        return self.inner.success_counter

    def opened_at_s(self) -> float | None:
        """When the breaker last opened, in the clock's time."""
        at = self.inner.opened_at
        return None if at is None else at.timestamp()

    @property
    def opened_at(self) -> datetime | None:
        at = self.opened_at_s()
        if at is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=self.clock.now() - at)

    @opened_at.setter
    def opened_at(self, _real_now: datetime) -> None:
        self.inner.opened_at = datetime.fromtimestamp(self.clock.now(), UTC)


class _RedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage, except that an unreachable Redis does not stop the app from starting: every other
    operation already falls back (to closed), and the keys are created on the first read that finds them missing."""

    def _initialize_redis_state(self, state: str) -> None:
        try:
            super()._initialize_redis_state(state)
        except redis.RedisError as exc:
            log.warning("breaker %s: Redis unreachable (%s); closed until it answers", self._namespace_name, exc)


def storage(name: str, clock: Clock, redis_url: str | None) -> ClockStorage:
    """In memory, or in Redis under `pybreaker:<name>:*` so every replica sees one state and one failure count."""
    if redis_url is None:
        return ClockStorage(pybreaker.CircuitMemoryStorage(CLOSED), clock)
    client = redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    return ClockStorage(_RedisStorage(CLOSED, client, namespace=name), clock)


@dataclass
class Gate:
    """One breaker: admits calls, and hands their outcomes to pybreaker."""

    name: str
    breaker: pybreaker.CircuitBreaker
    store: ClockStorage

    @property
    def state(self) -> str:
        return self.breaker.state.name  # re-reads the storage: another replica may have moved it

    @property
    def failures(self) -> int:
        return self.breaker.fail_counter

    def admit(self) -> None:
        if self.state != OPEN:
            return
        opened = self.store.opened_at_s()
        left = self.breaker.reset_timeout - (self.store.clock.now() - opened) if opened is not None else 0.0
        if left > 0:
            raise BreakerOpen(self.name, left)
        # Time is up: this call is the trial; reporting it moves the breaker through half-open.

    def succeeded(self) -> None:
        self._report(None)

    def failed(self, error: Exception) -> None:
        self._report(error)

    def _report(self, error: Exception | None) -> None:
        replayed = False

        def replay() -> None:
            nonlocal replayed
            replayed = True
            if error is not None:
                raise error

        try:
            self.breaker.call(replay)
        except pybreaker.CircuitBreakerError:
            if replayed:
                raise
            # Opened by another call since this one was admitted: pybreaker refused to count it, as it should.
        except Exception as exc:
            if exc is not error:
                raise
