"""A named policy for one external dependency: circuit breaker + retries + a timeout per attempt + a fallback.

    payments = Policy("payments", retry=Retry(on=(httpx.TransportError,)), timeout_s=0.5, fallback=lambda exc: None)

    @payments                        # sync or async function
    def balance(unit: str) -> Balance | None: ...

    payments.call(fetch, unit)       # or `await payments.acall(fetch, unit)`

    with payments:                   # one guarded attempt (no retry: a block cannot be run again)
        ...

Order, outermost first: breaker admission, retries (tenacity), the timeout of each attempt, the call. The breaker
counts every attempt (a failing service trips it sooner, and an open breaker stops the retries); the fallback
answers when the call fails in the end (retries exhausted, an error not retryable, breaker open), except for
the errors `Breaker.exclude` declares the caller's own, which propagate untouched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import pybreaker
import tenacity
from prometheus_client import REGISTRY, CollectorRegistry

from portero.resilience.breaker import BreakerOpen, Gate, storage
from portero.resilience.clock import SYSTEM, Clock
from portero.resilience.metrics import metrics_for, track

P = ParamSpec("P")
T = TypeVar("T")
Fallback = Callable[[Exception], Any]

# Sync calls run in these threads so that a timeout can give up on them (a thread cannot be cancelled: a late one
# finishes in the background). Queueing for a thread counts against the timeout, so a full pool stays bounded.
_threads = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="resilience")


class CallTimeout(TimeoutError):
    """One attempt took longer than the policy's `timeout_s` (retryable: a TimeoutError)."""


@dataclass(frozen=True)
class Retry:
    """Retries with exponential backoff and jitter (tenacity's `wait_exponential_jitter`), capped twice."""

    attempts: int = 3
    """Most attempts of one call, the first included (1: no retry)."""
    total_s: float = 2.0
    """No retry starts whose backoff would end more than this many seconds after the call began."""
    initial_s: float = 0.05
    """Backoff before the first retry; doubles for each next one..."""
    max_s: float = 1.0
    """...up to this."""
    jitter_s: float = 0.05
    """Uniformly random extra seconds added to each backoff, so that replicas do not retry in step."""
    on: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    """The retryable errors; anything else fails the call at once. `CallTimeout` is a TimeoutError."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Retry.attempts must be at least 1, got {self.attempts}")
        if self.total_s <= 0 or self.initial_s < 0 or self.max_s < self.initial_s or self.jitter_s < 0:
            raise ValueError(f"Retry: need total_s > 0 and 0 <= initial_s <= max_s, jitter_s >= 0; got {self}")


@dataclass(frozen=True)
class Breaker:
    """pybreaker's settings: open after `fail_max` consecutive failures, try again after `reset_s`."""

    fail_max: int = 5
    reset_s: float = 30.0
    success_threshold: int = 1
    """Successful trial calls in half-open before it closes."""
    exclude: tuple[type[Exception], ...] = ()
    """Errors that are the caller's, not the dependency's (a 404, a validation error): never counted, never
    retried, never replaced by the fallback."""

    def __post_init__(self) -> None:
        if self.fail_max < 1 or self.reset_s <= 0 or self.success_threshold < 1:
            raise ValueError(f"Breaker: need fail_max >= 1, reset_s > 0, success_threshold >= 1; got {self}")


class _StopAfterTotal(tenacity.stop.stop_base):
    """tenacity's `stop_before_delay`, on the injected clock instead of `time.monotonic`."""

    def __init__(self, clock: Clock, started: float, total_s: float) -> None:
        self.clock, self.started, self.total_s = clock, started, total_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock.now() - self.started + retry_state.upcoming_sleep > self.total_s


class Policy:
    """A named breaker + retry + timeout + fallback; see the module docstring for its use."""

    def __init__(
        self,
        name: str,
        *,
        retry: Retry = Retry(),
        breaker: Breaker = Breaker(),
        timeout_s: float = 1.0,
        fallback: Fallback | None = None,
        redis_url: str | None = None,
        clock: Clock = SYSTEM,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        """`redis_url` (default: the `REDIS_URL` environment variable; "" keeps it in memory) shares the breaker's
        state and failure count with every replica using the same name."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.name = name
        self.retry = retry
        self.settings = breaker
        self.timeout_s = timeout_s
        self.fallback = fallback
        self.clock = clock
        self.metrics = metrics_for(registry)
        url = os.environ.get("REDIS_URL") if redis_url is None else redis_url
        store = storage(name, clock, url or None)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=breaker.fail_max,
            reset_timeout=breaker.reset_s,
            success_threshold=breaker.success_threshold,
            exclude=list(breaker.exclude),
            listeners=[_Listener(self)],
            state_storage=store,
            name=name,
            throw_new_error_on_trip=False,
        )
        self.gate = Gate(name, self.breaker, store)
        track(self)
        self.refresh()

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open`, as the storage has it now."""
        return self.gate.state

    def refresh(self) -> None:
        self.metrics.publish(self.name, self.gate.state, self.gate.failures)

    # -- the call, sync -----------------------------------------------------------------------------------------

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        retrying = tenacity.Retrying(sleep=self.clock.sleep, **self._tenacity())
        try:
            value: T = retrying(self._attempt, fn, *args, **kwargs)
        except Exception as exc:
            return self._failed(exc)  # type: ignore[no-any-return]
        self.metrics.calls.labels(self.name, "success").inc()
        return value

    def _attempt(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.gate.admit()
        context = contextvars.copy_context()  # e.g. Flask's current_app, inside the thread too
        future = _threads.submit(context.run, functools.partial(fn, *args, **kwargs))
        try:
            value = future.result(timeout=self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise self._attempt_failed(CallTimeout(f"{self.name}: no answer within {self.timeout_s:g} s")) from None
        except Exception as exc:
            self._attempt_failed(exc)
            raise
        self._attempt_succeeded()
        return value

    # -- the call, async ----------------------------------------------------------------------------------------

    async def acall(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        retrying = tenacity.AsyncRetrying(sleep=self.clock.asleep, **self._tenacity())
        try:
            value: T = await retrying(self._aattempt, fn, *args, **kwargs)
        except Exception as exc:
            return self._failed(exc)  # type: ignore[no-any-return]
        self.metrics.calls.labels(self.name, "success").inc()
        return value

    async def _aattempt(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        self.gate.admit()
        try:
            value = await asyncio.wait_for(fn(*args, **kwargs), self.timeout_s)
        except TimeoutError:
            raise self._attempt_failed(CallTimeout(f"{self.name}: no answer within {self.timeout_s:g} s")) from None
        except Exception as exc:
            self._attempt_failed(exc)
            raise
        self._attempt_succeeded()
        return value

    # -- shared ------------------------------------------------------------------------------------------------

    def _tenacity(self) -> dict[str, Any]:
        retry = self.retry
        return {
            "stop": tenacity.stop_after_attempt(retry.attempts)
            | _StopAfterTotal(self.clock, self.clock.now(), retry.total_s),
            "wait": tenacity.wait_exponential_jitter(
                multiplier=retry.initial_s, max=retry.max_s, jitter=retry.jitter_s
            ),
            "retry": tenacity.retry_if_exception(self._retryable),
            "before_sleep": lambda _state: self.metrics.retries.labels(self.name).inc(),
            "reraise": True,
        }

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry.on) and not isinstance(exc, (BreakerOpen, *self.settings.exclude))

    def _attempt_succeeded(self) -> None:
        self.gate.succeeded()
        self.metrics.attempts.labels(self.name, "success").inc()

    def _attempt_failed(self, exc: Exception) -> Exception:
        self.gate.failed(exc)
        outcome = "timeout" if isinstance(exc, CallTimeout) else "error"
        self.metrics.attempts.labels(self.name, outcome).inc()
        return exc

    def _failed(self, exc: Exception) -> Any:
        if isinstance(exc, self.settings.exclude):
            self.metrics.calls.labels(self.name, "success").inc()  # the dependency answered; the caller erred
            raise exc
        self.metrics.calls.labels(self.name, "rejected" if isinstance(exc, BreakerOpen) else "failure").inc()
        if self.fallback is None:
            raise exc
        self.metrics.fallbacks.labels(self.name).inc()
        return self.fallback(exc)

    # -- decorator ---------------------------------------------------------------------------------------------

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.acall(fn, *args, **kwargs)

            return guarded_async

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call(fn, *args, **kwargs)

        return guarded

    # -- context manager: one guarded attempt ------------------------------------------------------------------

    def __enter__(self) -> Policy:
        self._enter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Policy:
        self._enter()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)

    def _enter(self) -> None:
        try:
            self.gate.admit()
        except BreakerOpen:
            self.metrics.calls.labels(self.name, "rejected").inc()
            raise

    def _exit(self, exc: BaseException | None) -> None:
        if exc is None:
            self._attempt_succeeded()
            self.metrics.calls.labels(self.name, "success").inc()
        elif isinstance(exc, Exception):  # a cancellation says nothing about the dependency
            self._attempt_failed(exc)
            excluded = isinstance(exc, self.settings.exclude)
            self.metrics.calls.labels(self.name, "success" if excluded else "failure").inc()


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old: pybreaker.CircuitBreakerState | None,
        new: pybreaker.CircuitBreakerState,
    ) -> None:
        self.policy.metrics.transitions.labels(self.policy.name, new.name).inc()
        self.policy.metrics.publish(self.policy.name, new.name, cb.fail_counter)

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.policy.metrics.failures.labels(self.policy.name).set(cb.fail_counter)

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.policy.metrics.failures.labels(self.policy.name).set(cb.fail_counter)
