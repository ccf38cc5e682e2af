"""Active health as check transcripts: a string of results in, the verdict after each one out."""

from __future__ import annotations

import pytest

from portero.router.health import ActiveHealth, next_check_at


def replay(health: ActiveHealth, results: str) -> tuple[str, str]:
    """'+' a passed check, '-' a failed one; returns the verdict after each ('U'/'D') and where it changed ('!')."""
    verdicts, changes = "", ""
    for result in results:
        changes += "!" if health.observe(ok=result == "+") else "."
        verdicts += "U" if health.healthy else "D"
    return verdicts, changes


@pytest.mark.parametrize(
    ("healthy", "results", "verdicts", "changes"),
    [
        (True, "---", "UUD", "..!"),  # fall 3
        (True, "--+---", "UUUUUD", ".....!"),  # a pass in between restarts the count
        (True, "-----", "UUDDD", "..!.."),  # reported once
        (False, "++", "DU", ".!"),  # rise 2
        (False, "+-++", "DDDU", "...!"),
        (False, "++--+---", "DUUUUUUD", ".!.....!"),
        (True, "++++", "UUUU", "...."),
    ],
)
def test_rise_and_fall_follow_haproxy(healthy, results, verdicts, changes):
    assert replay(ActiveHealth(healthy=healthy), results) == (verdicts, changes)


def test_rise_and_fall_are_settable():
    assert replay(ActiveHealth(healthy=True, rise=1, fall=1), "-+-") == ("DUD", "!!!")


def test_thresholds_below_one_are_refused():
    with pytest.raises(ValueError, match="rise=0"):
        ActiveHealth(healthy=True, rise=0)


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [(0.0, 12.0), (0.1, 12.2), (-0.1, 11.8), (-5.0, 10.0)],
)
def test_next_check_is_an_interval_later_give_or_take_its_jitter(jitter, expected):
    assert next_check_at(10.0, 2.0, jitter) == pytest.approx(expected)
