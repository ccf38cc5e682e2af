from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

REQUIRE_ALL = os.environ.get("PORTERO_REQUIRE_ALL") == "1"


def require_tool(name: str, why: str) -> str:
    """Path of a system tool; skip (or fail in CI, where PORTERO_REQUIRE_ALL=1) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({why}); `make provision` as root installs it"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_docker(swarm: bool = False) -> None:
    """Skip (or fail in CI) unless a Docker Engine answers, and with `swarm`, unless it is a swarm manager."""
    why = "`make provision` as root installs docker.io and starts dockerd (scripts/provision-docker.sh)"
    try:
        import docker

        client = docker.from_env(timeout=10)
        info = client.info()
    except Exception as exc:
        message = f"no Docker Engine answers ({type(exc).__name__}: {exc}); {why}"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)
    if swarm and not info.get("Swarm", {}).get("ControlAvailable"):
        message = f"the Docker Engine is not a swarm manager ({info.get('Swarm', {}).get('LocalNodeState')}); {why}"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)


CLUSTER_RUN = "/run/portero-swarm"  # scripts/swarm-cluster.sh: sockets, registry password
CLUSTER_NODES = ("n1", "n2", "n3")  # n1 the manager


def require_cluster() -> None:
    """Skip (or fail in CI) unless the three-node test swarm of scripts/swarm-cluster.sh answers."""
    why = "`make provision` as root makes it (scripts/swarm-cluster.sh up), `make test` makes and removes it"
    try:
        import docker

        client = docker.DockerClient(base_url=f"unix://{CLUSTER_RUN}/n1.sock", timeout=10)
        ready = [n for n in client.api.nodes() if n["Status"]["State"] == "ready"]
    except Exception as exc:
        message = f"no test cluster ({type(exc).__name__}: {exc}); {why}"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)
    if len(ready) < len(CLUSTER_NODES):
        message = f"the test cluster has {len(ready)} ready node(s) of {len(CLUSTER_NODES)}; {why}"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_server(tmp_path):
    """A fresh real redis-server on a free loopback port (its own, so a test may stop and restart it)."""
    from tests.redis_server import RedisServer

    executable = require_tool("redis-server", "the Redis store, shared registry and shared breakers need it")
    server = RedisServer(executable, tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager on a free loopback port, its notifications going to a webhook receiver of the test's
    own (`alertmanager.received`: every body it POSTed)."""
    from tests.alertmanager_server import AlertmanagerServer
    from tests.webhook_receiver import Receiver

    executable = require_tool("prometheus-alertmanager", "the Alertmanager API v2 push is tested against it")
    receiver = Receiver()
    server = AlertmanagerServer(executable, tmp_path / "alertmanager", receiver)
    server.start()
    yield server
    server.stop()
    receiver.close()


# `pytest -n 2 --dist loadfile` (`make test`) hands the two workers whole files, by default the files with the
# most tests first: the long integration files, with few tests each, came last, and one worker often ran one of
# them alone at the end (test_readme, test_down, test_api_schema: over a minute each). These go first instead,
# longest first: seconds of setup, calls and teardown in a full run on a busy 2-core machine (of the Docker files
# only test_swarm_cluster measured); the rest keep xdist's order after them. The workers then end within a short
# file of each other. A file missing here only starts later; a figure that went stale only costs time, never a
# test.
LONG_FILES = {
    "tests/integration/test_router_processes.py": 170,
    "tests/integration/test_swarm_cluster.py": 157,
    "tests/integration/test_deployments_hold.py": 153,
    "tests/integration/test_tls_acme.py": 100,
    "tests/integration/test_monitoring.py": 96,
    "tests/integration/test_redis_cluster.py": 91,
    "tests/integration/test_portero.py": 77,
    "tests/integration/test_apply_tells.py": 77,
    "tests/integration/test_autoscaling.py": 74,
    "tests/integration/test_down.py": 70,
    "tests/integration/test_readme.py": 68,
    "tests/integration/test_deployments.py": 66,
    "tests/integration/test_dashboard.py": 62,
    "tests/integration/router/test_faults.py": 45,
    "tests/integration/test_api_schema.py": 41,
    "tests/integration/test_isolation.py": 40,
    "tests/integration/test_resilience.py": 40,
    "tests/integration/test_logs.py": 36,
    "tests/integration/test_router_failover.py": 32,
    "tests/integration/test_auth.py": 28,
    "tests/integration/test_drain.py": 18,
    "tests/integration/test_dashboard_load.py": 12,
    "tests/integration/test_tls_files.py": 11,
    "tests/unit/monitor/test_series.py": 10,
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` with the files of LONG_FILES first (longest first); any other mode as xdist has it."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFilesFirst(LoadFileScheduling):
        ordered = False

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # the first call: the queue is complete (one unit per file), nothing handed out
                units = sorted(self.workqueue.items(), key=lambda unit: -LONG_FILES.get(unit[0], 0))
                self.workqueue.clear()
                self.workqueue.update(units)
                self.ordered = True
            super()._assign_work_unit(node)

    return LongestFilesFirst(config, log)
