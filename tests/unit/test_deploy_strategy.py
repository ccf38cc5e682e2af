"""Each deploy strategy as a scripted trace on a fake clock: observations in, the next record out."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from portero.cli.views import analysis_cells
from portero.deploy import strategy
from portero.deploy.model import MOVES, Deployment, Figures, Move, MoveError, Observation, Phase, State, Verdict
from portero.spec.models import AnalysisSettings, DeploySettings, Spec


def deployment(kind: str, replicas: int = 3, old: int | None = None) -> Deployment:
    d = Deployment("portal-1-ab12", "portal", 1, 2, kind, "deploy", "test", replicas, 0.0)  # type: ignore[arg-type]
    return d if old is None else Deployment(**{**d.to_dict(), "old_count": old, "steps": ()})


SETTINGS = DeploySettings(
    progress_deadline_s=10, keep_old_s=5, canary_pause_s=4, analysis=AnalysisSettings(window_s=3, min_requests=5)
)


def seen(new: int, old: int, verdict: str | None = None, unstartable: str | None = None) -> Observation:
    v = Verdict(verdict, f"{verdict} verdict", 50) if verdict else None
    return Observation(ready_new=new, ready_old=old, verdict=v, unstartable=unstartable)


def trace(d: Deployment, script: list[tuple[float, Observation]], settings: DeploySettings = SETTINGS) -> Deployment:
    for now, observed in script:
        d = strategy.advance(d, observed, settings, now)
    return d


# -- rolling -----------------------------------------------------------------------------------------------------


def test_rolling_replaces_one_at_a_time_each_new_replica_ready_before_an_old_one_goes():
    d = strategy.begin(deployment("rolling", old=3), SETTINGS, 0.0)
    assert (d.phase, d.old_count, d.new_count) == (Phase.ROLLING, 3, 1)
    d = strategy.advance(d, seen(0, 3), SETTINGS, 1.0)
    assert (d.old_count, d.new_count) == (3, 1)  # nothing ready yet: nothing goes
    d = strategy.advance(d, seen(1, 3), SETTINGS, 2.0)
    assert (d.old_count, d.new_count) == (2, 2)
    d = strategy.advance(d, seen(2, 2), SETTINGS, 3.0)
    assert (d.old_count, d.new_count) == (1, 3)
    d = strategy.advance(d, seen(3, 1), SETTINGS, 4.0)
    assert (d.old_count, d.new_count) == (0, 3)
    d = strategy.advance(d, seen(3, 0), SETTINGS, 5.0)
    assert (d.state, d.phase, d.traffic) == (State.SUCCEEDED, Phase.DONE, None)


def test_rolling_takes_old_replicas_that_are_not_ready_out_first():
    # Two old replicas crash-loop (backoff); a fix is deployed: they are unavailable already, so both go at once
    # and new ones take their place, instead of waiting for them to be ready (issue 19, case 13).
    d = strategy.begin(deployment("rolling", replicas=2, old=2), SETTINGS, 0.0)
    assert (d.old_count, d.new_count) == (2, 1)
    d = strategy.advance(d, seen(1, 0), SETTINGS, 1.0)
    assert (d.old_count, d.new_count) == (0, 2)
    d = strategy.advance(d, seen(2, 0), SETTINGS, 2.0)
    assert d.state is State.SUCCEEDED


def test_rolling_with_max_unavailable_starts_by_taking_one_old_replica_out():
    settings = SETTINGS.model_copy(update={"max_surge": 0, "max_unavailable": 1})
    d = strategy.begin(deployment("rolling", old=3), settings, 0.0)
    assert (d.old_count, d.new_count) == (2, 1)


def test_rolling_progress_deadline_restarts_on_every_new_ready_replica():
    # 5 replicas, one ready every 4 s with a 10-s deadline: 20 s in all, never 10 s without progress.
    d = strategy.begin(deployment("rolling", replicas=5, old=5), SETTINGS, 0.0)
    for ready in range(1, 6):
        d = strategy.advance(d, seen(ready - 1, 5 - ready + 1), SETTINGS, ready * 4.0 - 1)
        d = strategy.advance(d, seen(ready, 5 - ready + 1), SETTINGS, ready * 4.0)
    d = strategy.advance(d, seen(5, 0), SETTINGS, 21.0)
    assert d.state is State.SUCCEEDED, d.reason


def test_rolling_without_progress_for_the_deadline_rolls_back_naming_the_ready_count():
    d = strategy.begin(deployment("rolling", old=3), SETTINGS, 0.0)
    d = strategy.advance(d, seen(1, 3), SETTINGS, 2.0)
    d = strategy.advance(d, seen(1, 2), SETTINGS, 11.9)
    assert d.state is State.RUNNING
    d = strategy.advance(d, seen(1, 2), SETTINGS, 12.1)
    assert d.state is State.ROLLED_BACK
    assert d.reason == "revision 2 had 1/2 ready replica(s) after 10 s without progress"
    assert (d.traffic, d.new_count) == (0.0, 0)


def test_a_new_replica_that_cannot_start_rolls_back_at_once():
    d = strategy.begin(deployment("rolling", old=3), SETTINGS, 0.0)
    d = strategy.advance(
        d, seen(0, 3, unstartable="replica portal-2-aa: could not start: command not found"), SETTINGS, 0.5
    )
    assert d.state is State.ROLLED_BACK
    assert d.reason == "revision 2 cannot start: replica portal-2-aa: could not start: command not found"


def test_a_service_at_zero_is_checked_with_one_replica():
    d = strategy.begin(deployment("rolling", replicas=1, old=0), SETTINGS, 0.0)
    assert (d.old_count, d.new_count) == (0, 1)
    d = strategy.advance(d, seen(1, 0), SETTINGS, 1.0)
    assert d.state is State.SUCCEEDED


# -- blue-green --------------------------------------------------------------------------------------------------


def test_blue_green_switches_once_the_green_group_is_ready_then_keeps_the_old_one_for_keep_old_s():
    d = strategy.begin(deployment("blue-green", old=3), SETTINGS, 0.0)
    assert (d.phase, d.new_count, d.old_count, d.traffic) == (Phase.STARTING, 3, 3, 0.0)
    d = strategy.advance(d, seen(2, 3), SETTINGS, 1.0)
    assert d.phase is Phase.STARTING
    d = strategy.advance(d, seen(3, 3), SETTINGS, 2.0)
    assert (d.phase, d.traffic, d.old_count) == (Phase.SWITCHED, 1.0, 3)
    d = strategy.advance(d, seen(3, 3, "pass"), SETTINGS, 6.9)
    assert d.phase is Phase.SWITCHED
    d = strategy.advance(d, seen(3, 3, "pass"), SETTINGS, 7.0)
    assert (d.state, d.old_count) == (State.SUCCEEDED, 0)


def test_blue_green_watch_is_no_lack_of_progress():
    settings = SETTINGS.model_copy(update={"keep_old_s": 30})  # 30 s of watch, a 10-s deadline
    d = strategy.begin(deployment("blue-green"), settings, 0.0)
    d = trace(d, [(1.0, seen(3, 3)), (20.0, seen(3, 3, "pass")), (31.0, seen(3, 3, "pass"))], settings)
    assert d.state is State.SUCCEEDED


def test_blue_green_green_group_without_progress_for_the_deadline_rolls_back():
    # Every strategy keeps its progress deadline (issue 19, case 13): a green replica ready at 4 s restarts it,
    # then nothing for 10 s.
    d = strategy.begin(deployment("blue-green"), SETTINGS, 0.0)
    d = trace(d, [(4.0, seen(1, 3)), (13.9, seen(1, 3))])
    assert d.state is State.RUNNING
    d = strategy.advance(d, seen(1, 3), SETTINGS, 14.1)
    assert (d.state, d.traffic, d.new_count) == (State.ROLLED_BACK, 0.0, 0)
    assert d.reason == "revision 2 had 1/3 ready replica(s) after 10 s without progress"


def test_blue_green_switches_back_when_the_analysis_fails_after_the_switch():
    d = strategy.begin(deployment("blue-green"), SETTINGS, 0.0)
    d = trace(d, [(1.0, seen(3, 3)), (1.5, seen(3, 3, "fail"))])
    assert (d.state, d.traffic, d.new_count) == (State.ROLLED_BACK, 0.0, 0)
    assert d.reason == "analysis failed: fail verdict"


# -- canary ------------------------------------------------------------------------------------------------------


def test_canary_moves_traffic_in_steps_and_pauses_count_against_no_deadline():
    # Each step's replicas are ready in 1 s; each pause is 4 s; the whole takes 15 s with a 10-s deadline
    # (issue 18, case 2: it was rolled back at the deadline counted from the start).
    d = strategy.begin(deployment("canary", replicas=4, old=4), SETTINGS, 0.0)
    assert (d.new_count, d.traffic) == (1, 0.0)
    d = strategy.advance(d, seen(1, 4), SETTINGS, 1.0)
    assert (d.phase, d.traffic) == (Phase.CANARY, 0.1)
    d = strategy.advance(d, seen(1, 4, "pass"), SETTINGS, 5.0)
    assert (d.phase, d.canary_step, d.new_count, d.traffic) == (Phase.STARTING, 1, 2, 0.1)
    d = strategy.advance(d, seen(2, 4), SETTINGS, 6.0)
    assert (d.phase, d.traffic) == (Phase.CANARY, 0.5)
    d = strategy.advance(d, seen(2, 4, "pass"), SETTINGS, 10.0)
    assert (d.canary_step, d.new_count) == (2, 4)
    d = strategy.advance(d, seen(4, 4), SETTINGS, 11.0)
    assert (d.phase, d.traffic) == (Phase.CANARY, 1.0)
    d = strategy.advance(d, seen(4, 4, "pass"), SETTINGS, 15.0)
    assert d.state is State.SUCCEEDED, d.reason


def test_canary_waits_one_more_pause_when_inconclusive():
    d = strategy.begin(deployment("canary"), SETTINGS, 0.0)
    d = trace(d, [(1.0, seen(1, 3)), (5.0, seen(1, 3, "inconclusive"))])
    assert (d.phase, d.canary_step) == (Phase.CANARY, 0)
    d = strategy.advance(d, seen(1, 3, "inconclusive"), SETTINGS, 9.0)
    assert d.canary_step == 1


def test_canary_step_not_ready_within_the_deadline_rolls_back():
    d = strategy.begin(deployment("canary"), SETTINGS, 0.0)
    d = trace(d, [(1.0, seen(1, 3)), (5.0, seen(1, 3, "pass")), (15.1, seen(1, 3))])
    assert d.state is State.ROLLED_BACK
    assert "1/2 ready replica(s) after 10 s" in d.reason


def test_canary_failed_analysis_rolls_back():
    d = strategy.begin(deployment("canary"), SETTINGS, 0.0)
    d = trace(d, [(1.0, seen(1, 3)), (2.0, seen(1, 3, "fail"))])
    assert (d.state, d.traffic) == (State.ROLLED_BACK, 0.0)


# -- what every strategy shares ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rolling", "blue-green", "canary"])
def test_abort_goes_back_at_once_and_says_who_asked(kind):
    d = strategy.begin(deployment(kind), SETTINGS, 0.0)
    d = strategy.abort(d, "aborted by token admin (tk1)", 3.0)
    assert (d.state, d.phase, d.traffic, d.new_count, d.finished_at) == (State.ABORTED, Phase.DONE, 0.0, 0, 3.0)
    assert d.reason == "aborted by token admin (tk1)"
    assert d.serving_revision == 1


def test_the_phase_table_refuses_a_move_it_does_not_list():
    d = strategy.begin(deployment("blue-green"), SETTINGS, 0.0)
    with pytest.raises(MoveError, match="move 'next_step' is not allowed in phase 'starting'"):
        d.move(Move.NEXT_STEP, "?", 1.0)
    done = strategy.abort(d, "test", 1.0)
    with pytest.raises(MoveError):
        done.move(Move.ROLL_BACK, "?", 2.0)
    assert all(phase is not Phase.DONE for phase, _ in MOVES)  # nothing leaves DONE


def test_every_spec_strategy_has_an_object_and_unknown_names_are_refused():
    assert set(strategy.STRATEGIES) == {"rolling", "blue-green", "canary"}
    with pytest.raises(ValidationError, match="rolling"):
        Spec.model_validate({"deploy": {"strategy": "red-black"}, "services": {"a": {"command": "x"}}})
    body = deployment("rolling").to_dict() | {"strategy": "red-black"}
    with pytest.raises(ValueError, match="unknown deploy strategy 'red-black'"):
        Deployment.from_dict(body)


def test_a_records_analysis_figures_survive_the_store_and_an_older_record_has_none():
    figures = Figures(requests=120, p95_s=0.045, queued=300, queue_p95_s=0.85)
    d = dataclasses.replace(deployment("canary"), analysis=figures)
    assert Deployment.from_dict(d.to_dict()) == d
    older = {k: v for k, v in deployment("canary").to_dict().items() if k != "analysis"}
    assert Deployment.from_dict(older).analysis is None
    assert analysis_cells(d.to_dict()["analysis"]) == ("45 ms", "850 ms (300 waited)")
    assert analysis_cells({"requests": 0, "p95_s": None, "queued": 0, "queue_p95_s": None}) == ("-", "-")
    assert analysis_cells(None) == ("-", "-")
