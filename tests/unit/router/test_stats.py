"""Histogram and counters: where observations land, what percentiles come out, merging, plain snapshots."""

from __future__ import annotations

import json
import random
from bisect import bisect_left

import pytest

from portero.router.stats import BOUNDS_S, REFUSED, TIMEOUT, Counters, LatencyHistogram


def histogram(values: list[float]) -> LatencyHistogram:
    result = LatencyHistogram()
    for value in values:
        result.observe(value)
    return result


def bucket_width(value: float) -> float:
    index = bisect_left(BOUNDS_S, value)
    return BOUNDS_S[index] - (BOUNDS_S[index - 1] if index else 0.0)


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q / 100 * len(ordered)) - 1)]


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (0.0, 0),
        (0.0005, 0),
        (0.00051, 1),
        (0.001, 1),
        (0.3, 9),
        (10.0, 13),
        (10.5, 14),
        (59.0, 15),
        (3600.0, 20),
        (1e9, 21),
    ],
)
def test_a_value_lands_in_the_first_bucket_whose_bound_is_at_least_it(value, bucket):
    counts = histogram([value]).counts
    assert counts[bucket] == 1
    assert sum(counts) == 1


def test_count_and_sum_are_kept():
    result = histogram([0.1, 0.2, 0.3])
    assert result.count == 3
    assert result.sum == pytest.approx(0.6)


@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_are_within_a_bucket_of_the_truth(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(-4.0, 1.0) for _ in range(20_000)]  # median ~18 ms, a long tail
    result = histogram(values)
    for q in (50, 95, 99):
        truth = exact_percentile(values, q)
        assert result.percentile(q) == pytest.approx(truth, abs=bucket_width(truth)), q


def test_percentiles_interpolate_inside_a_bucket():
    result = histogram([0.3] * 50 + [0.4] * 50)  # all in (0.25, 0.5]
    assert result.percentile(50) == pytest.approx(0.375)
    assert result.percentile(100) == pytest.approx(0.5)
    assert result.percentile(0) == pytest.approx(0.25)


def test_percentiles_of_nothing_and_beyond_the_last_bound():
    assert LatencyHistogram().percentile(50) is None
    assert histogram([4000.0, 5000.0]).percentile(99) == BOUNDS_S[-1]
    with pytest.raises(ValueError, match=r"0\.\.100"):
        histogram([1.0]).percentile(101)


def test_merge_equals_observing_everything_in_one():
    first, second = [0.001 * n for n in range(1, 200)], [0.05 * n for n in range(1, 100)]
    merged = histogram(first)
    merged.merge(histogram(second))
    whole = histogram(first + second)
    assert merged.counts == whole.counts
    assert merged.count == whole.count
    assert merged.sum == pytest.approx(whole.sum)
    assert merged.percentile(90) == pytest.approx(whole.percentile(90))


def test_a_snapshot_is_plain_data_that_does_not_follow_later_observations():
    result = histogram([0.002, 0.02])
    snapshot = result.snapshot()
    result.observe(5.0)
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["count"] == 2
    assert sum(snapshot["counts"]) == 2
    assert len(snapshot["counts"]) == len(snapshot["bounds_s"]) + 1
    p50 = snapshot["p50_s"]
    assert p50 is not None
    assert 0.001 < p50 <= 0.025


@pytest.mark.parametrize(
    ("code", "status_class"),
    [(101, "1xx"), (200, "2xx"), (204, "2xx"), (302, "3xx"), (404, "4xx"), (503, "5xx"), (599, "5xx"), (999, "5xx"),
     (0, "5xx")],
)  # fmt: skip
def test_statuses_are_counted_by_class(code, status_class):
    counters = Counters()
    counters.record_status(code)
    responses = counters.as_dict()["responses"]
    assert responses[status_class] == 1
    assert sum(responses.values()) == 1


def test_counters_as_dict_reports_every_counter():
    counters = Counters()
    counters.requests, counters.retries, counters.in_flight, counters.ejections = 3, 1, 2, 5
    counters.faults[REFUSED] = 4
    counters.faults[TIMEOUT] = 6
    assert counters.as_dict() == {
        "requests": 3,
        "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
        "faults": {"refused": 4, "connect_timeout": 0, "reset": 0, "timeout": 6, "stalled": 0, "bad_response": 0},
        "retries": 1,
        "ejections": 5,
        "in_flight": 2,
    }
