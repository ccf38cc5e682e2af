"""The series store: rings, queries, and its memory budget over a simulated day (fake clock)."""

from __future__ import annotations

import math
import sys

import pytest

from portero.monitor.series import SeriesStore, Tier, increase, parse_selector, percentile, series_key
from portero.spec.models import SeriesSettings

T0 = 1_700_000_000.0


def store(budget: int = 16 << 20, fine: Tier = Tier(1, 3600), coarse: Tier = Tier(60, 86_400)) -> SeriesStore:
    return SeriesStore(fine, coarse, budget)


def test_keys_sort_labels_and_selectors_parse_back():
    assert series_key("replica_cpu_percent", {"service": "portal", "replica": "p-1"}) == (
        'replica_cpu_percent{replica="p-1",service="portal"}'
    )
    assert series_key("host_cpu_percent", {}) == "host_cpu_percent"
    assert parse_selector('replica_cpu_percent{service="portal", replica="a\\"b"}') == (
        "replica_cpu_percent",
        {"service": "portal", "replica": 'a"b'},
    )
    assert parse_selector("host_load1") == ("host_load1", {})
    with pytest.raises(ValueError, match="labels must be written"):
        parse_selector("host_load1{service=portal}")
    with pytest.raises(ValueError, match="expected a series name"):
        parse_selector("Host-Load")


def test_samples_within_a_step_are_averaged_and_gaps_stay_empty():
    s = store()
    for offset, value in ((0.0, 10), (0.5, 20), (1.0, 30), (4.2, 50)):
        s.add("g", {}, value, T0 + offset)
    series = s.get("g", {})
    assert series is not None
    assert s.points(series, T0, T0 + 5, T0 + 5) == [(T0, 15.0), (T0 + 1, 30.0), (T0 + 4, 50.0)]


def test_counters_keep_the_last_value_and_their_increase_survives_a_reset():
    s = store()
    for offset, value in enumerate([100, 110, 130, 5, 20]):  # the counter restarted after 130
        s.add("c", {}, value, T0 + offset, kind="counter")
    series = s.get("c", {})
    assert series is not None
    assert s.aggregate(series, "increase", 10, T0 + 4) == 10 + 20 + 5 + 15
    assert s.aggregate(series, "rate", 10, T0 + 4) == pytest.approx(50 / 4)
    assert increase([1.0]) is None


def test_window_aggregates():
    s = store()
    for offset in range(100):
        s.add("g", {}, float(offset), T0 + offset)
    series = s.get("g", {})
    assert series is not None
    now = T0 + 99
    assert s.aggregate(series, "last", 0, now) == 99
    assert s.aggregate(series, "avg", 9.5, now) == pytest.approx(94.0)  # buckets 89..99 overlap the window
    assert s.aggregate(series, "max", 10, now) == 99
    assert s.aggregate(series, "min", 9.5, now) == 89
    assert s.aggregate(series, "p50", 9.5, now) == pytest.approx(94.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert s.aggregate(series, "avg", 10, now + 1000) is None  # nothing in the window
    assert s.aggregate(series, "last", 60, now + 1000) is None  # stale


def test_nan_records_nothing():
    s = store()
    assert not s.add("g", {}, math.nan, T0)
    assert s.get("g", {}) is None


def test_old_windows_read_the_coarse_ring():
    s = store(fine=Tier(1, 60), coarse=Tier(10, 3600))
    for offset in range(0, 600):
        s.add("g", {}, 1.0 if offset < 300 else 3.0, T0 + offset)
    series = s.get("g", {})
    assert series is not None
    now = T0 + 599
    assert s.ring_for(series, now - 30, now) is series.fine
    assert s.ring_for(series, now - 600, now) is series.coarse
    assert s.aggregate(series, "avg", 600, now) == pytest.approx(2.0)
    step, points = s.downsample(series, now - 600, now, 100, now)
    assert step == 100
    assert [round(v, 2) for _, v in points] == [1.0, 1.0, 1.0, 3.0, 3.0, 3.0][-len(points) :]


def test_a_wall_clock_that_steps_back_folds_into_the_newest_bucket():
    s = store()
    s.add("g", {}, 10, T0 + 10)
    s.add("g", {}, 20, T0 + 5)
    series = s.get("g", {})
    assert series is not None
    assert s.points(series, T0, T0 + 20, T0 + 20) == [(T0 + 10, 15.0)]


def test_stale_series_expire_and_pressure_evicts_the_stalest():
    s = store(budget=0)  # room for one series
    assert s.max_series == 1
    assert s.add("a", {}, 1, T0)
    assert not s.add("b", {}, 1, T0)  # "a" is current: the new one is refused, not "a" dropped
    assert s.refused == 1
    assert s.add("b", {}, 1, T0 + 10)  # "a" went stale: it makes room
    assert s.evicted == 1
    assert [x.name for x in s.series.values()] == ["b"]
    s.add("b", {}, 1, T0 + 10)
    assert s.expire(T0 + 10 + 86_400 + 1) == 1
    assert not s.series
    assert not s.by_name


def test_a_simulated_day_of_30_series_stays_under_the_budget():
    settings = SeriesSettings(memory_budget_bytes=2 << 20)  # 2 MiB: room for ~50 series with the defaults
    s = SeriesStore(
        Tier(settings.fine_step_s, settings.fine_keep_s),
        Tier(settings.coarse_step_s, settings.coarse_keep_s),
        settings.memory_budget_bytes,
    )
    names = [("replica_cpu_percent", {"service": "portal", "replica": f"portal-1-{i:04x}"}) for i in range(24)]
    names += [(f"host_{n}", {}) for n in ("cpu_percent", "memory_percent", "load1", "disk_percent", "a", "b")]
    assert len(names) == 30
    generations = [  # each replica is replaced every 6 hours (new series)
        [(n, {**la, "replica": f"{la['replica']}-{g}"} if "replica" in la else la) for n, la in names] for g in range(4)
    ]
    now = T0
    for tick in range(86_400):  # one day at 1 s
        now = T0 + tick
        value = float(tick % 100)
        for name, labels in generations[tick // 21_600]:
            s.add(name, labels, value, now)
        if tick % 60 == 0:
            s.expire(now)
    measured = sum(
        sys.getsizeof(x.fine.values) + sys.getsizeof(x.coarse.values) + sys.getsizeof(x) + sys.getsizeof(x.key)
        for x in s.series.values()
    )
    assert measured <= s.nbytes() <= settings.memory_budget_bytes
    assert len(s.series) <= s.max_series
    # Replaced replicas' series made room for the new ones within two passes of each replacement.
    assert s.refused <= 3 * 2 * 24
    assert len(s.select("replica_cpu_percent")) >= 24
    assert all(x.updated_at == now for x in s.select("replica_cpu_percent") if x.labels["replica"].endswith("-3"))
    cpu = s.get("host_cpu_percent", {})
    assert cpu is not None
    assert s.aggregate(cpu, "max", 3600, now) == 99
