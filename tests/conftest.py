from __future__ import annotations

import os
import shutil

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
