"""When each certificate is obtained or renewed, decided purely: what portero holds for each host and `now` in, the
host to order for (or when to look again) out.

A host without a certificate, or with one that does not serve it or came from another ACME directory (staging
before production, say), is due at once. A certificate is renewed when two thirds of its life have passed (Let's
Encrypt's advice: 30 days before the end of a 90-day certificate), which leaves a third of it for retries. After a
failed attempt the next waits `retry_initial_s`, doubling up to `retry_max_s`; meanwhile the certificate served
stays what it was. An attempt's own lifecycle is a table (`TRANSITIONS`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from portero.spec.models import AcmeSettings
from portero.tls.certs import Facts, serves

RENEW_AT = 2 / 3  # of a certificate's life


class Attempt(StrEnum):
    IDLE = "idle"  # nothing in progress; the last attempt (if any) worked
    ORDERING = "ordering"  # an order is in progress
    FAILED = "failed"  # the last attempt failed; the next waits for its backoff


class Step(StrEnum):
    BEGIN = "begin"
    SUCCEED = "succeed"
    FAIL = "fail"


TRANSITIONS: dict[tuple[Attempt, Step], Attempt] = {
    (Attempt.IDLE, Step.BEGIN): Attempt.ORDERING,
    (Attempt.FAILED, Step.BEGIN): Attempt.ORDERING,
    (Attempt.ORDERING, Step.SUCCEED): Attempt.IDLE,
    (Attempt.ORDERING, Step.FAIL): Attempt.FAILED,
}


class AttemptTransitionError(RuntimeError):
    def __init__(self, host: str, attempt: Attempt, step: Step) -> None:
        super().__init__(f"certificate of {host}: step {step.value!r} is not allowed while {attempt.value!r}")


@dataclass(frozen=True)
class Holding:
    """What portero has for one host it obtains certificates for."""

    host: str
    facts: Facts | None = None  # of the certificate it serves
    directory: str = ""  # the ACME directory that certificate came from
    attempt: Attempt = Attempt.IDLE
    failures: int = 0  # attempts failed in a row
    failed_at: float = 0.0
    error: str = ""  # why the last attempt failed
    forced: bool = False  # renew now, whatever its age (the API's `renew`)

    def step(self, step: Step, now: float = 0.0, error: str = "") -> Holding:
        after = TRANSITIONS.get((self.attempt, step))
        if after is None:
            raise AttemptTransitionError(self.host, self.attempt, step)
        if step is Step.SUCCEED:
            return replace(self, attempt=after, failures=0, error="", forced=False)
        if step is Step.FAIL:
            return replace(self, attempt=after, failures=self.failures + 1, failed_at=now, error=error, forced=False)
        return replace(self, attempt=after)

    def usable(self, directory: str) -> bool:
        """It has a certificate for its host from this directory (expired or not)."""
        return self.facts is not None and self.directory == directory and serves(self.facts.names, self.host)


def retry_delay(failures: int, settings: AcmeSettings) -> float:
    return float(min(settings.retry_initial_s * 2 ** max(failures - 1, 0), settings.retry_max_s))


def due_at(holding: Holding, directory: str, settings: AcmeSettings) -> float:
    """When the next attempt for this host may begin (0: at once)."""
    if holding.attempt is Attempt.ORDERING:
        return float("inf")
    if holding.forced or not holding.usable(directory):
        at = 0.0
    else:
        assert holding.facts is not None
        at = holding.facts.renew_at(RENEW_AT)
    if holding.failures:
        at = max(at, holding.failed_at + retry_delay(holding.failures, settings))
    return at


def next_order(holdings: list[Holding], directory: str, settings: AcmeSettings, now: float) -> tuple[str | None, float]:
    """The host to order for now (the most overdue), or None and when one is next due."""
    if not holdings:
        return None, float("inf")
    at, host = min((due_at(h, directory, settings), h.host) for h in holdings)
    return (host, now) if at <= now else (None, at)
