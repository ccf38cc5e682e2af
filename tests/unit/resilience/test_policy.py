"""portero.resilience on a fake clock: retries and their caps, the breaker's cycle, fallback, sync and async."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from portero.resilience import Breaker, BreakerOpen, CallTimeout, Policy, Retry


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Flaky:
    """Fails `failures` times with `error`, then answers "ok"; counts its calls."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "ok"

    async def coro(self) -> str:
        return self()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def policy(clock, registry, name="payments", **kw) -> Policy:
    kw.setdefault("retry", Retry(attempts=3, initial_s=0.1, max_s=1.0, jitter_s=0.05, total_s=10))
    kw.setdefault("breaker", Breaker(fail_max=100, reset_s=10))
    return Policy(name, clock=clock, registry=registry, redis_url="", **kw)


def sample(registry, name, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_retries_back_off_exponentially_with_jitter_within_bounds(clock, registry):
    for _ in range(20):
        clock.slept.clear()
        flaky = Flaky(3)
        p = policy(clock, registry, retry=Retry(attempts=4, initial_s=0.1, max_s=0.3, jitter_s=0.05, total_s=10))
        assert p.call(flaky) == "ok"
        assert flaky.calls == 4
        first, second, third = clock.slept
        assert 0.1 <= first <= 0.15
        assert 0.2 <= second <= 0.25
        assert third == pytest.approx(0.3)  # capped at max_s, jitter included
    assert sample(registry, "resilience_retries_total", policy="payments") == 60
    assert sample(registry, "resilience_attempts_total", policy="payments", outcome="error") == 60
    assert sample(registry, "resilience_calls_total", policy="payments", outcome="success") == 20


def test_attempts_are_capped_and_the_last_error_is_raised(clock, registry):
    flaky = Flaky(100)
    p = policy(clock, registry, retry=Retry(attempts=4, initial_s=0.01, jitter_s=0, total_s=60))
    with pytest.raises(ConnectionError, match="failure 4"):
        p.call(flaky)
    assert flaky.calls == 4
    assert len(clock.slept) == 3
    assert sample(registry, "resilience_calls_total", policy="payments", outcome="failure") == 1


def test_total_time_caps_retries_before_a_backoff_would_overrun_it(clock, registry):
    flaky = Flaky(100)
    p = policy(clock, registry, retry=Retry(attempts=100, initial_s=1, max_s=1, jitter_s=0, total_s=3.5))
    started = clock.now()
    with pytest.raises(ConnectionError):
        p.call(flaky)
    assert flaky.calls == 4  # attempts at 0, 1, 2, 3 s; one more would start at 4 s > 3.5 s
    assert clock.now() - started == 3


def test_only_declared_errors_are_retried(clock, registry):
    flaky = Flaky(1, ValueError)
    p = policy(clock, registry)
    with pytest.raises(ValueError, match="failure 1"):
        p.call(flaky)
    assert flaky.calls == 1
    assert clock.slept == []


def test_breaker_opens_rejects_then_closes_through_half_open(clock, registry):
    p = policy(clock, registry, retry=Retry(attempts=1), breaker=Breaker(fail_max=3, reset_s=10))
    failing = Flaky(100)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            p.call(failing)
    assert p.state == "open"
    assert sample(registry, "resilience_breaker_open", breaker="payments") == 1
    assert sample(registry, "resilience_breaker_state", breaker="payments", state="open") == 1
    with pytest.raises(BreakerOpen) as refused:
        p.call(failing)
    assert failing.calls == 3  # refused without trying
    assert refused.value.retry_in_s == pytest.approx(10)
    clock.advance(9.9)
    with pytest.raises(BreakerOpen):
        p.call(failing)
    clock.advance(0.1)
    with pytest.raises(ConnectionError):  # the trial call fails: open again, for another reset_s
        p.call(failing)
    assert p.state == "open"
    clock.advance(10)
    assert p.call(Flaky(0)) == "ok"  # the trial succeeds: closed
    assert p.state == "closed"
    moves = {
        s: sample(registry, "resilience_breaker_transitions_total", breaker="payments", state=s)
        for s in ("open", "half-open", "closed")
    }
    assert moves == {"open": 2, "half-open": 2, "closed": 1}
    assert sample(registry, "resilience_calls_total", policy="payments", outcome="rejected") == 2
    assert sample(registry, "resilience_breaker_open", breaker="payments") == 0


def test_an_open_breaker_stops_retries(clock, registry):
    p = policy(clock, registry, retry=Retry(attempts=10, initial_s=0.01, total_s=60), breaker=Breaker(fail_max=2))
    failing = Flaky(100)
    with pytest.raises(BreakerOpen):
        p.call(failing)
    assert failing.calls == 2


def test_fallback_answers_failures_but_not_the_callers_own_errors(clock, registry):
    class NotFound(Exception):
        pass

    p = policy(
        clock,
        registry,
        retry=Retry(attempts=2, initial_s=0.01),
        breaker=Breaker(fail_max=2, exclude=(NotFound,)),
        fallback=lambda exc: f"degraded: {type(exc).__name__}",
    )
    assert p.call(Flaky(100)) == "degraded: ConnectionError"
    assert p.call(Flaky(100)) == "degraded: BreakerOpen"
    assert sample(registry, "resilience_fallbacks_total", policy="payments") == 2
    clock.advance(31)
    with pytest.raises(NotFound):
        p.call(Flaky(1, NotFound))
    assert p.state == "closed"  # a caller's error is an answer: the trial counts as a success


def test_sync_timeout_gives_up_on_a_slow_call(clock, registry):
    p = policy(clock, registry, retry=Retry(attempts=1), timeout_s=0.05)
    began = time.perf_counter()
    with pytest.raises(CallTimeout):
        p.call(time.sleep, 1)
    assert time.perf_counter() - began < 0.5
    assert sample(registry, "resilience_attempts_total", policy="payments", outcome="timeout") == 1


def test_timeouts_are_retryable_and_count_towards_the_breaker(clock, registry):
    p = policy(clock, registry, retry=Retry(attempts=2, initial_s=0.01), breaker=Breaker(fail_max=2), timeout_s=0.02)

    async def slow() -> str:
        await asyncio.sleep(1)
        return "late"

    async def run() -> None:
        with pytest.raises(CallTimeout):
            await p.acall(slow)
        with pytest.raises(BreakerOpen):
            await p.acall(slow)

    asyncio.run(run())
    assert sample(registry, "resilience_attempts_total", policy="payments", outcome="timeout") == 2
    assert p.state == "open"


def test_decorator_for_sync_and_async_functions(clock, registry):
    flaky_sync, flaky_async = Flaky(1), Flaky(1)
    p = policy(clock, registry)

    @p
    def fetch() -> str:
        return flaky_sync()

    @p
    async def afetch() -> str:
        return await flaky_async.coro()

    assert fetch() == "ok"
    assert asyncio.run(afetch()) == "ok"
    assert fetch.__name__ == "fetch"
    assert (flaky_sync.calls, flaky_async.calls) == (2, 2)


async def test_async_breaker_cycle_and_fallback(clock, registry):
    p = policy(
        clock, registry, retry=Retry(attempts=1), breaker=Breaker(fail_max=2, reset_s=5), fallback=lambda e: None
    )
    failing = Flaky(100)
    assert await p.acall(failing.coro) is None
    assert await p.acall(failing.coro) is None
    assert p.state == "open"
    assert await p.acall(failing.coro) is None
    assert failing.calls == 2
    clock.advance(5)
    assert await p.acall(Flaky(0).coro) == "ok"
    assert p.state == "closed"


async def test_context_manager_guards_one_attempt_sync_and_async(clock, registry):
    p = policy(clock, registry, breaker=Breaker(fail_max=2, reset_s=5))
    with pytest.raises(ConnectionError), p:
        raise ConnectionError("down")
    with pytest.raises(ConnectionError):
        async with p:
            raise ConnectionError("down")
    assert p.state == "open"
    with pytest.raises(BreakerOpen), p:
        pytest.fail("an open breaker must not run the block")
    clock.advance(5)
    async with p:
        pass
    assert p.state == "closed"
    assert sample(registry, "resilience_calls_total", policy="payments", outcome="rejected") == 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="fail_max"):
        Breaker(fail_max=0)
