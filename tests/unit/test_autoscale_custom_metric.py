"""A custom metric target (`autoscale.metrics`) in the pure decision, on a fake clock."""

from __future__ import annotations

from portero.autoscale.decide import History, Limits, Signals, decide
from portero.spec.models import MetricTarget, ServiceAutoscale

QUEUE = ServiceAutoscale(cpu_percent=None, metrics=(MetricTarget(metric="jobs_queued", target=5),))
NAME = "jobs_queued"


def run(policy: ServiceAutoscale, current: int, total: float, ticks: int, start: float = 1000.0):
    """`ticks` passes of a load given as a total over the replicas; each decision is applied."""
    history, now, counts = History(), start, []
    for _ in range(ticks):
        value = total / current if current else None
        signals = Signals(ready=current, custom=((NAME, value),))
        decision = decide(current, signals, policy, Limits(1, 20), history, now)
        history, current = decision.history, decision.desired
        counts.append((now - start, current, decision.reason))
        now += policy.tick_s
    return counts


def test_a_custom_metric_above_target_scales_up_to_what_it_needs():
    counts = run(QUEUE, current=2, total=30, ticks=10)  # 30 queued jobs, 5 per replica wanted: 6 replicas
    assert counts[0][1] > 2
    assert counts[0][2].startswith("jobs_queued 15 vs target 5")
    assert counts[-1][1] == 6


def test_a_custom_metric_below_target_scales_down_only_after_stabilization():
    policy = QUEUE.model_copy(update={"stabilization_s": 20, "scale_down_cooldown_s": 0})
    counts = run(policy, current=6, total=5, ticks=30)
    early = [c for t, c, _ in counts if t < 20]
    assert set(early) == {6}  # the window starts with the current count in it
    assert counts[-1][1] == 1


def test_no_reading_of_the_custom_metric_holds_the_count():
    decision = decide(3, Signals(ready=3, custom=((NAME, None),)), QUEUE, Limits(1, 10), History(), 1000.0)
    assert (decision.desired, decision.reason) == (3, "no signal: stay at 3")


def test_the_custom_metric_is_one_of_several_signals_and_the_largest_count_wins():
    policy = ServiceAutoscale(cpu_percent=70, metrics=(MetricTarget(metric="jobs_queued", target=5),))
    signals = Signals(ready=2, cpu_percent=35, custom=((NAME, 10),))
    decision = decide(2, signals, policy, Limits(1, 10), History(), 1000.0)
    assert decision.raw == 4
    assert decision.inputs["jobs_queued"] == 10
