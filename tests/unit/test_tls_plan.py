"""When certificates are ordered and renewed (tls/plan.py), and how they are stored (tls/vault.py): pure decisions
over a fake clock, and the file vault's modes."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from portero.spec.models import AcmeSettings
from portero.tls.certs import Facts
from portero.tls.plan import Attempt, AttemptTransitionError, Holding, Step, due_at, next_order, retry_delay
from portero.tls.vault import FileVault, Stored

DIRECTORY = "https://ca.example/dir"
SETTINGS = AcmeSettings(directory_url=DIRECTORY, retry_initial_s=60, retry_max_s=3600)
DAY = 86_400.0


def held(host: str, not_before: float, days: float, **extra: object) -> Holding:
    facts = Facts((host,), not_before, not_before + days * DAY, "ff", "1", "CN=ca")
    return Holding(host, facts, DIRECTORY, **extra)  # type: ignore[arg-type]


def test_a_host_without_a_certificate_is_due_at_once_and_one_with_a_90_day_one_after_60_days() -> None:
    assert due_at(Holding("a.example"), DIRECTORY, SETTINGS) == 0
    fresh = held("b.example", 1_000.0, 90)
    assert due_at(fresh, DIRECTORY, SETTINGS) == pytest.approx(1_000.0 + 60 * DAY)


def test_a_certificate_from_another_directory_or_for_another_name_is_replaced_at_once() -> None:
    staging = held("a.example", 0.0, 90)
    assert due_at(staging, "https://other.example/dir", SETTINGS) == 0
    wrong = Holding("a.example", Facts(("b.example",), 0.0, 90 * DAY, "ff", "1", "CN=ca"), DIRECTORY)
    assert due_at(wrong, DIRECTORY, SETTINGS) == 0


def test_failures_back_off_doubling_up_to_the_maximum_and_the_certificate_stays() -> None:
    assert [retry_delay(n, SETTINGS) for n in (1, 2, 3, 7, 8)] == [60, 120, 240, 3600, 3600]
    holding = held("a.example", 0.0, 90).step(Step.BEGIN).step(Step.FAIL, now=61 * DAY, error="CA away")
    assert holding.attempt is Attempt.FAILED
    assert holding.facts is not None  # what it served is untouched
    assert due_at(holding, DIRECTORY, SETTINGS) == pytest.approx(61 * DAY + 60)
    again = holding.step(Step.BEGIN).step(Step.FAIL, now=61 * DAY + 60, error="CA away")
    assert (again.failures, due_at(again, DIRECTORY, SETTINGS)) == (2, pytest.approx(61 * DAY + 180))
    done = again.step(Step.BEGIN).step(Step.SUCCEED)
    assert (done.failures, done.error, done.attempt) == (0, "", Attempt.IDLE)


def test_a_forced_renewal_is_due_now_and_an_order_in_progress_never_twice() -> None:
    fresh = held("a.example", 0.0, 90)
    assert due_at(Holding("a.example", fresh.facts, DIRECTORY, forced=True), DIRECTORY, SETTINGS) == 0
    ordering = fresh.step(Step.BEGIN)
    assert due_at(ordering, DIRECTORY, SETTINGS) == float("inf")
    with pytest.raises(AttemptTransitionError, match="'begin' is not allowed while 'ordering'"):
        ordering.step(Step.BEGIN)


def test_the_most_overdue_host_is_ordered_first_and_otherwise_when_the_next_is_due() -> None:
    now = 70 * DAY
    hosts = [held("late.example", 0.0, 90), held("later.example", 5 * DAY, 90), held("fine.example", now, 90)]
    assert next_order(hosts, DIRECTORY, SETTINGS, now) == ("late.example", now)
    assert next_order(hosts[2:], DIRECTORY, SETTINGS, now) == (None, pytest.approx(now + 60 * DAY))
    assert next_order([], DIRECTORY, SETTINGS, now) == (None, float("inf"))


def test_the_file_vault_keeps_keys_owner_only_and_reads_back_what_it_wrote(tmp_path: Path) -> None:
    vault = FileVault(tmp_path)
    stored = Stored("a.example", "CHAIN", "KEY", DIRECTORY, 12.5)

    async def roundtrip() -> tuple[dict[str, Stored], str | None]:
        await vault.save(stored)
        await vault.save_account(DIRECTORY, '{"kty": "EC", "d": "secret"}')
        return await vault.certificates(), await vault.account(DIRECTORY)

    certificates, account = asyncio.run(roundtrip())
    assert certificates == {"a.example": stored}
    assert account == '{"kty": "EC", "d": "secret"}'
    for path in [tmp_path / "tls", *(tmp_path / "tls").rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert not list((tmp_path / "tls").rglob("*.tmp"))
