"""The autoscaler's decisions as scripted traces: readings in, counts out, a fake clock ticking every `tick_s`.

Each tick feeds the last decision's history back and applies its count, as the loop does. Loads are mostly given
as totals over all replicas (`Trace.serve`), so that a scale-up lowers each replica's reading as it would for real.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from portero.autoscale.decide import Decision, History, Limits, Signals, decide
from portero.spec.models import ServiceAutoscale

IN_FLIGHT = ServiceAutoscale(cpu_percent=None, in_flight=10)  # 10 requests in flight per replica; defaults otherwise
START = 1000.0
WIDE = Limits(min=1, max=100)


@dataclass
class Trace:
    policy: ServiceAutoscale
    current: int
    limits: Limits = WIDE
    now: float = START
    history: History = field(default_factory=History)
    log: list[tuple[float, Decision]] = field(default_factory=list)

    def tick(self, **readings: float | None) -> Decision:
        """One pass with per-replica readings (`ready` defaults to the current count); the decision is applied."""
        signals = Signals(**{"ready": self.current, **readings})  # type: ignore[arg-type]
        decision = decide(self.current, signals, self.policy, self.limits, self.history, self.now)
        self.log.append((self.now, decision))
        self.history, self.current = decision.history, decision.desired
        self.now += self.policy.tick_s
        return decision

    def serve(self, ticks: int, **totals: float) -> list[Decision]:
        """`ticks` passes of a steady load given as totals (in-flight requests, CPU percent) over all replicas."""
        return [self.tick(**{k: v / max(self.current, 1) for k, v in totals.items()}) for _ in range(ticks)]

    def counts_since(self, at: float) -> list[tuple[float, int]]:
        """(seconds after `at`, count) for every pass from `at` on."""
        return [(t - at, d.desired) for t, d in self.log if t >= at]


# 1. A step load scales up within two ticks, and settles on what the load needs.


@pytest.mark.parametrize(
    ("policy", "reading", "on_target", "factor"),
    [
        (IN_FLIGHT, "in_flight", 40, 2),
        (IN_FLIGHT, "in_flight", 40, 3),
        (ServiceAutoscale(), "cpu_percent", 4 * 70, 2),
    ],
)
def test_a_step_load_scales_up_within_two_ticks(
    policy: ServiceAutoscale, reading: str, on_target: float, factor: float
) -> None:
    trace = Trace(policy, current=4)
    trace.serve(15, **{reading: on_target})  # 30 s on target: a full window, nothing moves
    assert trace.current == 4
    trace.serve(2, **{reading: on_target * factor})
    assert trace.current > 4


@pytest.mark.parametrize(("start", "before", "after"), [(1, 10, 30), (4, 40, 80), (4, 40, 120), (1, 10, 100)])
def test_a_step_load_settles_on_the_count_it_needs_without_overshoot(start: int, before: float, after: float) -> None:
    trace = Trace(IN_FLIGHT, current=start)
    trace.serve(15, in_flight=before)
    counts = [d.desired for d in trace.serve(30, in_flight=after)]  # 60 s
    assert max(counts) == math.ceil(after / 10) == counts[-1]


def test_not_ready_replicas_do_not_turn_a_load_at_or_above_target_into_a_scale_down() -> None:
    quick = ServiceAutoscale(
        cpu_percent=None, in_flight=10, stable_window_s=2, stabilization_s=0, scale_down_cooldown_s=0
    )
    trace = Trace(quick, current=4)
    trace.tick(ready=2, in_flight=10)  # 2 of 4 still starting, the 2 ready ones on target
    trace.tick(ready=2, in_flight=15)  # ...and above it: 3 would be enough for the ready ones, not for the load
    assert [d.desired for _, d in trace.log] == [4, 4]
    assert trace.tick(ready=2, in_flight=2).desired == 1  # below target, the ready ones' load is what counts


# 2. A noisy flat load moves nothing for an hour.


def noisy_hour(policy: ServiceAutoscale, seed: int) -> list[Decision]:
    """1,800 ticks of target x uniform(0.8, 1.2) per replica, up to the first change."""
    trace = Trace(policy, current=4)
    trace.serve(int(policy.stable_window_s / policy.tick_s), in_flight=40)  # the loop was running: a full window
    rng = random.Random(seed)
    decisions = []
    while len(decisions) < 1800 and trace.current == 4:
        decisions.append(trace.tick(in_flight=10 * rng.uniform(0.8, 1.2)))
    return decisions


@pytest.mark.parametrize("seed", [0, 1])
def test_a_noisy_flat_load_changes_nothing_for_an_hour(seed: int) -> None:
    decisions = noisy_hour(ServiceAutoscale(cpu_percent=None, in_flight=10, stable_window_s=60), seed)
    readings = [d.inputs["in_flight"] for d in decisions]
    assert min(readings) < 8.1
    assert max(readings) > 11.9
    assert {d.desired for d in decisions} == {4}


def test_a_noisy_flat_load_changes_nothing_for_an_hour_with_the_default_window() -> None:
    assert {d.desired for d in noisy_hour(IN_FLIGHT, seed=1)} == {4}


# 3. A load drop scales down only after the stabilization window, to the level the window allows.


def test_a_load_drop_scales_down_only_after_the_stabilization_window() -> None:
    trace = Trace(IN_FLIGHT, current=4)  # stabilization_s 300
    trace.serve(15, in_flight=40)
    drop = trace.now
    trace.serve(200, in_flight=10)  # 400 s
    counts = trace.counts_since(drop)
    assert {n for t, n in counts if t < 300} == {4}
    assert all("largest recommendation of the last 300 s" in d.reason for t, d in trace.log if 60 <= t - drop < 300)
    assert {n for t, n in counts if t >= 380} == {1}  # the window (300 s), then the 60 s average catching up


def test_a_scale_down_goes_to_the_largest_recommendation_of_the_window() -> None:
    instant = ServiceAutoscale(cpu_percent=None, in_flight=10, stable_window_s=2)  # each tick's reading alone
    trace = Trace(instant, current=4)
    trace.serve(5, in_flight=40)
    drop = trace.now
    trace.serve(50, in_flight=20)  # asks for 2 for 100 s...
    trace.serve(200, in_flight=10)  # ...then for 1
    counts = dict(trace.counts_since(drop))
    assert counts[296] == 4
    assert counts[298] == 2
    assert counts[396] == 2
    assert counts[398] == 1
    assert set(counts.values()) == {4, 2, 1}


def test_a_fresh_history_does_not_skip_the_stabilization_window() -> None:
    trace = Trace(IN_FLIGHT, current=4)  # the daemon just restarted, its history empty
    trace.serve(160, in_flight=10)
    counts = trace.counts_since(START)
    assert {n for t, n in counts if t < 300} == {4}
    assert counts[-1][1] == 1


# 4. Limits always hold.


def test_limits_hold_under_random_traces() -> None:
    rng = random.Random(6)
    for _ in range(200):
        low = rng.choice([0, 0, 1, 2])
        limits = Limits(min=low, max=max(1, low + rng.randint(0, 8)))
        policy = ServiceAutoscale(
            mode=rng.choice(["target", "threshold"]),
            in_flight=rng.choice([None, 5]),
            step=rng.randint(1, 3),
            stabilization_s=rng.choice([0, 10, 60]),
            scale_down_cooldown_s=rng.choice([0, 10]),
            idle_to_zero_s=rng.choice([0, 20]),
            panic_s=rng.choice([0, 6]),
        )
        trace = Trace(policy, current=rng.randint(limits.min, limits.max), limits=limits)
        for _ in range(30):
            busy = rng.random() < 0.7
            trace.tick(
                ready=rng.randint(0, trace.current),
                cpu_percent=rng.choice([None, rng.uniform(0, 100)]),
                in_flight=rng.uniform(0, 60) if busy else 0.0,
                queued=rng.randint(0, 5) if busy else 0,
                idle_s=0.0 if busy else rng.uniform(0, 60),
            )
        for _, d in trace.log:
            assert limits.min <= d.desired <= limits.max, (limits, policy, d)


# 5. Scale-up is rate limited outside panic; a panic scales up at once and blocks scale-down while it lasts.

CALM = ServiceAutoscale(cpu_percent=None, in_flight=10, stable_window_s=2, panic_factor=100)  # never panics


@pytest.mark.parametrize(("start", "first"), [(1, 5), (2, 6), (8, 16)])
def test_scale_up_is_at_most_double_or_four_more_per_period(start: int, first: int) -> None:
    trace = Trace(CALM, current=start)
    trace.serve(20, in_flight=500)  # asks for 50: 40 s
    counts = dict(trace.counts_since(START))
    assert counts[0] == first  # rate_period_s 15
    assert {counts[t] for t in range(2, 16, 2)} == {first}
    assert counts[16] == max(2 * first, first + 4)
    assert "rate limit" in trace.log[0][1].reason


def test_a_burst_panics_past_the_rate_limit_to_the_count_it_needs() -> None:
    trace = Trace(IN_FLIGHT, current=2)
    trace.serve(15, in_flight=20)
    burst = trace.serve(3, in_flight=100)  # 5x the target: 10 replicas' worth, over the 6 s panic window
    assert [d.desired for d in burst] == [5, 8, 10]  # the rate limit alone would stop at 6 for 15 s
    assert burst[0].reason == "burst: in-flight 23.3 vs target 10: 2 → 5 (panic)"
    assert all(d.reason.endswith("(panic)") for d in burst)
    assert {d.desired for d in trace.serve(30, in_flight=100)} == {10}


def test_a_burst_scales_up_through_the_scale_up_cooldown() -> None:
    slow = ServiceAutoscale(cpu_percent=None, in_flight=10, stable_window_s=2, scale_up_cooldown_s=60)
    trace = Trace(slow, current=2)
    assert trace.tick(in_flight=15).desired == 3  # a regular scale-up starts the cooldown
    held = trace.tick(in_flight=14)
    assert (held.desired, held.held) == (3, True)
    assert "scale-up cooldown" in held.reason
    burst = trace.tick(in_flight=40)  # 4x the target: over the 6 s panic window, 2.1x
    assert burst.desired == 12
    assert burst.reason.endswith("3 → 12 (panic)")


def test_panic_blocks_scale_down_while_it_lasts() -> None:
    jumpy = ServiceAutoscale(
        cpu_percent=None, in_flight=10, stable_window_s=2, panic_s=10, stabilization_s=0, scale_down_cooldown_s=0
    )
    trace = Trace(jumpy, current=4)
    trace.serve(1, in_flight=100)  # 2.5x the target: panic until 10 s
    trace.serve(8, in_flight=0)
    counts = dict(trace.counts_since(START))
    assert [counts[t] for t in range(0, 10, 2)] == [10] * 5
    assert all("panic blocks scale-down" in d.reason and d.held for _, d in trace.log[1:5])
    assert counts[10] == 1


# 6. Scale from zero, and to zero.

SCALE_TO_ZERO = Limits(min=0, max=10)


def test_a_request_waiting_at_zero_asks_for_a_replica_at_once() -> None:
    trace = Trace(IN_FLIGHT, current=0, limits=SCALE_TO_ZERO)
    assert trace.tick(ready=0, in_flight=0).desired == 0  # nobody waiting: stay at zero
    woken = trace.tick(ready=0, in_flight=1, queued=1)
    assert woken.desired >= 1
    assert woken.changed
    assert "0 → " in woken.reason


def test_idle_for_idle_to_zero_s_scales_to_zero() -> None:
    policy = ServiceAutoscale(cpu_percent=None, in_flight=10, idle_to_zero_s=60)  # stabilization_s 300
    trace = Trace(policy, current=2, limits=SCALE_TO_ZERO)
    trace.serve(10, in_flight=20)
    quiet = trace.now
    while trace.now < quiet + 100:
        trace.tick(in_flight=0, idle_s=trace.now - quiet)
    counts = trace.counts_since(quiet)
    assert all(n > 0 for t, n in counts if t < 60)
    assert all(n == 0 for t, n in counts if t >= 60)


def test_a_wake_up_from_zero_forgets_the_load_before_the_idle_period() -> None:
    policy = ServiceAutoscale(cpu_percent=None, in_flight=1, idle_to_zero_s=3, scale_down_cooldown_s=2, tick_s=1)
    trace = Trace(policy, current=1, limits=SCALE_TO_ZERO)
    trace.serve(10, in_flight=4)  # a load that needs 4, within the 60-s stable window of what follows
    assert trace.current >= 3
    quiet = trace.now
    while trace.current > 0:
        trace.tick(in_flight=0, idle_s=trace.now - quiet)
    woken = trace.tick(ready=0, in_flight=1, queued=1)
    assert woken.desired == 1
    for _ in range(3):  # the replica starts, then serves that one request
        assert trace.tick(ready=0, in_flight=1).desired == 1
    assert trace.tick(in_flight=1).desired == 1
    assert [s for _, s in woken.history.samples] == [Signals(ready=0, in_flight=1, queued=1)]  # the window anew


@pytest.mark.parametrize("limits", [SCALE_TO_ZERO, Limits(min=1, max=10)])
def test_recent_traffic_keeps_a_replica(limits: Limits) -> None:
    policy = ServiceAutoscale(cpu_percent=None, in_flight=10, stabilization_s=60, idle_to_zero_s=300)
    trace = Trace(policy, current=2, limits=limits)
    trace.serve(10, in_flight=20)
    quiet = trace.now
    while trace.now < quiet + 400:
        trace.tick(in_flight=0, idle_s=trace.now - quiet)
    counts = trace.counts_since(quiet)
    assert all(n >= 1 for t, n in counts if t < 300)
    assert counts[-1][1] == limits.min


# 7. Threshold mode: above the up threshold adds `step`, below the down threshold removes it, between holds.

STEPS = ServiceAutoscale(mode="threshold", step=2)


def test_threshold_mode_adds_a_step_above_the_up_threshold() -> None:
    trace = Trace(STEPS, current=4)
    trace.serve(10, cpu_percent=4 * 90)  # 90 % each, then 60 % over 6 replicas
    assert [d.desired for _, d in trace.log] == [6] * 10
    assert "cpu 90% > 70%: 4 → 6" in trace.log[0][1].reason


def test_threshold_mode_removes_a_step_below_the_down_threshold_after_stabilization() -> None:
    trace = Trace(STEPS, current=6)
    trace.serve(200, cpu_percent=120)  # 20 % each, then 30 % over 4 replicas
    counts = trace.counts_since(START)
    assert {n for t, n in counts if t < 300} == {6}
    assert {n for t, n in counts if t >= 300} == {4}
    assert "cpu 20% < 30%" in trace.log[0][1].reason


def test_threshold_mode_holds_between_the_thresholds() -> None:
    trace = Trace(STEPS, current=4)
    rng = random.Random(7)
    for _ in range(300):
        trace.tick(cpu_percent=rng.uniform(31, 69))
    assert {d.desired for _, d in trace.log} == {4}
    assert all("within 30..70%" in d.reason and not d.held for _, d in trace.log)


# 8. Several signals: the largest count wins; every decision says why, and a refusal says what refused.

SEVERAL = ServiceAutoscale(cpu_percent=70, in_flight=10, requests_per_second=50, stable_window_s=2)


@pytest.mark.parametrize(
    ("readings", "desired", "named"),
    [
        ({"cpu_percent": 80, "in_flight": 15, "requests_per_second": 25}, 6, "in-flight 15"),
        ({"cpu_percent": 126, "in_flight": 15, "requests_per_second": 25}, 8, "cpu 126%"),
        ({"cpu_percent": 70, "in_flight": 10, "requests_per_second": 90}, 8, "rps 90/s"),
    ],
)
def test_the_largest_count_wins_and_the_reason_names_its_signal(
    readings: dict[str, float], desired: int, named: str
) -> None:
    decision = Trace(SEVERAL, current=4).tick(**readings)
    assert decision.desired == desired
    assert named in decision.reason
    assert f"4 → {desired}" in decision.reason


def test_a_scale_down_cooldown_holds_and_says_so() -> None:
    policy = ServiceAutoscale(cpu_percent=None, in_flight=10, stable_window_s=2, stabilization_s=0)
    trace = Trace(policy, current=2)
    trace.tick(in_flight=15)  # 2 → 3
    held = trace.tick(in_flight=5)
    assert (held.desired, held.held, held.raw) == (3, True, 2)
    assert "held at 3: scale-down cooldown (30 s)" in held.reason


def test_stabilization_holds_and_says_so() -> None:
    trace = Trace(IN_FLIGHT, current=4)
    held = trace.tick(in_flight=5)
    assert (held.desired, held.held, held.raw) == (4, True, 2)
    assert held.reason == "in-flight 5 vs target 10; held at 4: largest recommendation of the last 300 s is 4"


def test_a_rate_limit_holds_and_says_so() -> None:
    trace = Trace(CALM, current=2)
    cut = trace.tick(in_flight=50)
    assert (cut.desired, cut.raw, cut.changed, cut.held) == (6, 10, True, False)
    assert "2 → 6" in cut.reason
    assert "rate limit: at most 6 within 15 s" in cut.reason
    held = trace.tick(in_flight=50 * 2 / 6)
    assert (held.desired, held.held) == (6, True)
    assert "rate limit" in held.reason


@pytest.mark.parametrize(
    ("current", "limits", "reading", "desired", "said"),
    [
        (4, Limits(min=1, max=5), 20, 5, "4 → 5 (limits 1..5)"),
        (5, Limits(min=1, max=5), 16, 5, "held at 5: limits 1..5"),
        (3, Limits(min=3, max=5), 2, 3, "held at 3: limits 3..5"),
    ],
)
def test_limits_hold_and_say_so(current: int, limits: Limits, reading: float, desired: int, said: str) -> None:
    policy = ServiceAutoscale(cpu_percent=None, in_flight=10, stabilization_s=0, panic_factor=100)
    decision = Trace(policy, current=current, limits=limits).tick(in_flight=reading)
    assert decision.desired == desired
    assert said in decision.reason
    assert decision.held == (desired == current)


def test_no_change_asked_is_no_hold() -> None:
    decision = Trace(IN_FLIGHT, current=4).tick(in_flight=10.5)
    assert (decision.desired, decision.held, decision.changed) == (4, False, False)
    assert decision.reason == "in-flight 10.5 vs target 10: stay at 4"
