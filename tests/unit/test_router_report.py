"""The router's counts on their way to the control plane (dataplane/report.py): the shape of a report, and the
queue waits of a service carried beside its latency."""

from __future__ import annotations

import pytest

from portero.dataplane.report import BUCKETS, Merge, RouterView, Tally


def counted(waits: int) -> Tally:
    tally = Tally(requests=waits, buckets=[waits] + [0] * (BUCKETS - 1))
    tally.waits[8] = waits  # waits of 0.1..0.25 s
    return tally


def test_a_tally_goes_through_json_whole():
    tally = counted(3)
    assert Tally.from_json(tally.to_json()) == tally


def test_a_report_of_a_worker_from_before_queue_waits_reads_as_none_waited():
    older = counted(3).to_json()[:9]
    assert Tally.from_json(older).waits == [0] * BUCKETS
    with pytest.raises(ValueError, match="another shape"):
        Tally.from_json([*older, [1, 2]])


def test_the_queue_waits_of_every_worker_add_up_in_the_control_planes_view():
    merge = Merge()
    for worker, waits in ((1, 2), (2, 3)):
        report = {"version": 1, "connections": 0, "active": 0, "endpoints": []}
        merge.add(worker, {**report, "services": {"portal": {"d": counted(waits).to_json(), "queued": 1}}})
    view = RouterView()
    view.apply(merge.take(), now=0.0)
    waits = view.service_totals("portal").waits_histogram()
    assert waits.count == 5
    assert 0.1 < (waits.percentile(95) or 0) <= 0.25
    assert view.queued("portal") == 2
