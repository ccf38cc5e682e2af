"""The dashboard's pure parts: content negotiation, its assets, and the chart series' downsampling."""

from __future__ import annotations

import math
import re

import pytest

from portero.api.auth import wants_json
from portero.api.dashboard import ASSET_NAME, CHART_SERIES, chart_series, load_assets
from portero.monitor.series import SeriesStore, Tier
from tests.api_app import api_app

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        ("application/json", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),  # Chromium's navigation
        ("*/*", False),
        ("", False),
    ],
)
def test_the_page_for_a_browser_the_summary_for_json(accept, json):
    """The route reads Accept as auth's public rule does (auth.wants_json): the HTML shell is the public answer."""
    assert wants_json(accept) is json


def test_the_assets_ship_in_the_package_small_and_self_contained():
    assets = load_assets()
    assert {"index.html", "app.js", "api.js", "charts.js", "i18n.js", "style.css"} <= set(assets)
    total = sum(len(a.body) for a in assets.values())
    assert total < 60_000, total  # page weight: kept small on purpose (docs/dashboard.md)

    for name, asset in assets.items():
        assert name == "index.html" or re.fullmatch(ASSET_NAME, name)
        text = asset.body.decode()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # every asset from portero itself
        assert "https://" not in text


def a_day(step_s: float) -> tuple[SeriesStore, float]:
    store = SeriesStore(Tier(1, 3600), Tier(60, 86_400), 64 << 20)
    at = T0
    while at < T0 + 86_400:
        wave = 1 + math.sin((at - T0) / 86_400 * 2 * math.pi)
        store.add("service_requests_per_second", {"service": "portal"}, 100 * wave, at)
        for replica in ("portal-1-a", "portal-1-b"):
            store.add("replica_cpu_percent", {"service": "portal", "replica": replica}, 50 * wave, at)
        at += step_s
    return store, at - step_s


def test_a_day_of_series_comes_back_in_at_most_max_points_per_series():
    store, now = a_day(step_s=10)
    out = chart_series(store, now, window_s=86_400, max_points=300)
    assert set(out.series) == set(CHART_SERIES)
    (rps,) = out.series["service_requests_per_second"]
    assert 250 <= len(rps.points) <= 300
    assert len(out.series["replica_cpu_percent"]) == 2
    assert out.step_s == pytest.approx(86_400 / 299)
    assert [t for t, _ in rps.points] == sorted(t for t, _ in rps.points)
    peak = max(v for _, v in rps.points)  # the wave's top survives averaging into ~5-minute buckets
    assert 195 < peak <= 200
    assert out.series["service_error_ratio"] == []  # no such series: an empty list, not an error


def test_a_short_window_reads_the_fine_ring_at_its_own_step():
    store, now = a_day(step_s=1)
    out = chart_series(store, now, window_s=120, max_points=600)
    (rps,) = out.series["service_requests_per_second"]
    assert out.step_s == pytest.approx(1.0)  # never finer than the ring holds
    assert 118 <= len(rps.points) <= 121


async def test_with_monitoring_off_the_summary_and_series_say_so_instead_of_failing(tmp_path):
    async with api_app(tmp_path) as served, served.client(served.viewer) as client:
        summary = (await client.get("/scalability/dashboard", headers={"Accept": "application/json"})).json()
        assert summary["monitoring"] is False
        assert summary["alerts"] == []
        assert summary["traffic"] == {}
        assert summary["deployments"] == {"current": None, "recent": []}
        assert summary["services"] == []  # nothing started in this app
        charts = await client.get("/scalability/dashboard/series", params={"window_s": 86_400, "max_points": 10})
        assert charts.status_code == 200
        assert charts.json()["series"] == {}
        for bad in ({"max_points": 1}, {"window_s": 10}, {"window_s": "day"}):
            assert (await client.get("/scalability/dashboard/series", params=bad)).status_code == 422, bad
        page = await client.get("/scalability/dashboard")
        assert page.headers["content-type"].startswith("text/html")
        assert "etag" not in page.headers  # a 304 would have no content type, and auth lets only HTML out
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/scalability/dashboard/assets/nope.js")).status_code == 404
        assert (await client.get("/scalability/dashboard/assets/index.html")).status_code == 404
