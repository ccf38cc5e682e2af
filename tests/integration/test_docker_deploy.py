"""A blue-green deployment on the docker runtime, under load through the router (issue: deployments)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import require_docker
from tests.integration.portero_cli import Portero
from tests.integration.test_deployments import DEPLOY, deploy_under_load, step_at, version_served
from tests.integration.test_docker_portero import docker_portal

pytestmark = pytest.mark.integration


@pytest.fixture
def portero(tmp_path):
    require_docker()
    instance = Portero(tmp_path)
    service = docker_portal()
    service["replicas"] = {"initial": 2, "min": 1, "max": 4}
    service["balance"] = {"slow_start_s": 0}
    # Containers on the vfs storage driver start slower than processes: a longer readiness deadline.
    instance.write_spec({"portal": service}, runtime="docker", deploy={**DEPLOY, "progress_deadline_s": 150})
    instance.cli("up", "--detach", timeout=600)
    instance.ready(2)
    yield instance
    instance.stop()
    ident_file = instance.state / "instance"
    if ident_file.exists():
        ident = ident_file.read_text().strip()
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=portero.instance={ident}"], capture_output=True, text=True
        ).stdout.split()
        if listed:
            subprocess.run(["docker", "rm", "-f", *listed], capture_output=True)
        images = subprocess.run(
            ["docker", "images", "-q", "--filter", f"label=portero.image.instance={ident}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if images:
            subprocess.run(["docker", "rmi", "-f", "--no-prune", *images], capture_output=True)


async def test_blue_green_on_docker_switches_with_no_failed_request(portero):
    d, report, t0 = await deploy_under_load(portero, {"version": "v2"}, deadline_s=200)
    assert d["state"] == "succeeded", d
    assert report.failed == 0, (dict(report.statuses), dict(report.errors))
    switch = step_at(d, "switched") - t0
    after = [version for sent, _, version, _ in report.timeline if sent > switch + 0.01]
    assert after
    assert set(after) == {"v2"}
    assert version_served(portero) == "v2"
