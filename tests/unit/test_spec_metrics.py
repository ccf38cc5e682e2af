"""The spec's scrape settings (`services.<name>.metrics`) and custom autoscaling targets (`autoscale.metrics`)."""

from __future__ import annotations

import pytest

from portero.spec import SpecError, parse_spec

SOURCE = "portero.yaml"


def parse(text: str):
    return parse_spec(text, source=SOURCE, environ={})


def test_a_scraped_service_and_a_custom_target_load_with_their_defaults():
    spec = parse(
        "services: {portal: {command: run, metrics: {path: /metrics},"
        " autoscale: {metrics: [{metric: jobs_queued, target: 5}]}}}"
    )
    service = spec.services["portal"]
    assert service.metrics is not None
    assert (service.metrics.interval_s, service.metrics.timeout_s, service.metrics.max_series) == (5, 2, 1000)
    (target,) = service.autoscale.metrics
    assert (target.metric, target.aggregate, target.window_s, target.target, target.match) == (
        "jobs_queued",
        "last",
        30,
        5,
        {},
    )
    assert parse("services: {portal: {command: run}}").services["portal"].metrics is None


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("{path: metrics}", "services.portal.metrics.path", "should match pattern"),
        ("{interval_s: 0.1}", "services.portal.metrics.interval_s", "greater than or equal to 0.5"),
        ("{max_series: 0}", "services.portal.metrics.max_series", "greater than or equal to 1"),
        ("{pathh: /metrics}", "services.portal.metrics.pathh", "unknown key"),
    ],
)
def test_bad_scrape_settings_are_refused_naming_the_field(text, path, reason):
    with pytest.raises(SpecError) as caught:
        parse(f"services: {{portal: {{command: run, metrics: {text}}}}}")
    assert any(line.startswith(f"{SOURCE}: {path}") and reason in line for line in str(caught.value).splitlines())


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("{metric: jobs_queued, target: 0}", "services.portal.autoscale.metrics.0.target"),
        ("{metric: Jobs, target: 5}", "services.portal.autoscale.metrics.0.metric"),
        ("{metric: jobs_queued, target: 5, aggregate: p99}", "services.portal.autoscale.metrics.0.aggregate"),
    ],
)
def test_bad_custom_targets_are_refused_naming_the_field(target, path):
    with pytest.raises(SpecError) as caught:
        parse(f"services: {{portal: {{command: run, autoscale: {{metrics: [{target}]}}}}}}")
    assert any(line.startswith(f"{SOURCE}: {path}") for line in str(caught.value).splitlines()), str(caught.value)
