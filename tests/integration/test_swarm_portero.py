"""portero on the swarm runtime, against a real single-node swarm: scaling moves the revision's Swarm service,
and a new revision rolls out task by task, each new task running before an old one stops."""

from __future__ import annotations

import itertools
import os
import threading
import time

import docker.errors
import httpx
import pytest

from tests.conftest import require_docker
from tests.integration.portero_cli import PORTAL, Portero

pytestmark = pytest.mark.integration
BASE_IMAGE = os.environ.get("PORTERO_BASE_IMAGE", "portero/base:bookworm")


def swarm_portal(version: str) -> dict[str, object]:
    return {
        "build": {"context": str(PORTAL), "args": {"BASE_IMAGE": BASE_IMAGE}},
        "version": version,
        "env": {"WEB_CONCURRENCY": "1"},
        "replicas": {"initial": 2, "min": 1, "max": 10},
        "health": {"interval_s": 1, "start_period_s": 30},
        "stop_grace_s": 5,
    }


@pytest.fixture(scope="module")
def client():
    require_docker(swarm=True)
    return docker.from_env()


@pytest.fixture(scope="module")
def up(client, tmp_path_factory):
    portero = Portero(tmp_path_factory.mktemp("swarm-portero"))
    portero.write_spec({"portal": swarm_portal("v1")}, runtime="swarm")
    portero.cli("up", "--detach", timeout=600)
    yield portero
    if (portero.state / "admin.json").exists():
        portero.cli("down", check=False)
    portero.kill_everything()
    label = {"label": f"portero.instance={instance_of(portero)}"}
    for service in client.api.services(filters=label):
        client.api.remove_service(service["ID"])
    for image in client.images.list(filters={"label": f"portero.image.instance={instance_of(portero)}"}):
        client.images.remove(image.id, force=True, noprune=True)


def instance_of(portero: Portero) -> str:
    return (portero.state / "instance").read_text().strip()


def running_tasks(client, portero: Portero) -> dict[int, int]:
    """Running tasks per revision (of services that have any), as Swarm reports them."""
    counts: dict[int, int] = {}
    for service in client.api.services(filters={"label": f"portero.instance={instance_of(portero)}"}):
        revision = int(service["Spec"]["Labels"]["portero.revision"])
        try:
            tasks = client.api.tasks(filters={"service": service["ID"], "desired-state": "running"})
        except docker.errors.NotFound:  # removed since it was listed: the old revision is gone
            continue
        running = sum(1 for t in tasks if t["Status"]["State"] == "running")
        if running:  # a service per replica: the revision's tasks add up
            counts[revision] = counts.get(revision, 0) + running
    return counts


def scale(portero: Portero, replicas: int) -> None:
    portero.http.post(f"{portero.url}/services/portal/scale", json={"replicas": replicas}).raise_for_status()


def test_scaling_2_to_4_to_1_changes_the_running_tasks(client, up):
    for count in (2, 4, 1):
        scale(up, count)
        replicas = up.ready(count)
        up.wait(f"{count} running task(s)", lambda n=count: running_tasks(client, up) == {1: n}, timeout_s=20)
        for replica in replicas:  # each task answers on its slot's port, on this node's loopback
            assert replica["address"].startswith("127.0.0.1:")
            assert httpx.get(f"http://{replica['address']}/health", trust_env=False).status_code == 200
        print(f"scaled to {count}: tasks {running_tasks(client, up)}, replicas {[r['address'] for r in replicas]}")


def test_a_new_revision_rolls_out_task_by_task_start_first(client, up):
    scale(up, 3)
    up.ready(3)
    up.wait("3 running tasks", lambda: running_tasks(client, up) == {1: 3}, timeout_s=20)
    seen: list[dict[int, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            counts = running_tasks(client, up)
            if not seen or counts != seen[-1]:
                seen.append(counts)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        up.write_spec({"portal": swarm_portal("v2")}, runtime="swarm")
        applied_at = time.time()
        up.cli("apply", timeout=300)
        up.wait("revision 2 everywhere", lambda: running_tasks(client, up) == {2: 3}, timeout_s=90)
    finally:
        done.set()
        watcher.join(timeout=5)
    print("running tasks per revision during the rollout:", seen)
    assert min(sum(counts.values()) for counts in seen) >= 3  # start-first: no old task stops before a new one runs
    new = [counts.get(2, 0) for counts in seen]
    assert all(b - a <= 1 for a, b in itertools.pairwise(new))  # new tasks come one at a time
    assert new[-1] == 3
    # Task by task, start-first, as the event log tells it: the k-th new replica starts once k-1 old ones were
    # retired, and an old one retires only once as many new ones are ready (an old task may still be draining
    # while the next new one starts, so Swarm briefly runs up to 5: that is capacity 4, at most one extra).
    started = ready = retired = 0
    for event in sorted(up.events(since=applied_at, service="portal"), key=lambda e: e["at"]):
        revision = int(event["subject"].split("-")[1]) if event["subject"].startswith("portal-") else None
        if event["kind"] == "replica.started" and revision == 2:
            started += 1
            assert started <= retired + 1, f"new replica #{started} started before old #{started - 1} retired"
        elif event["kind"] == "replica.ready" and revision == 2:
            ready += 1
        elif event["kind"] == "replica.retiring" and revision == 1:
            retired += 1
            assert retired <= ready, f"old replica #{retired} retired before {retired} new were ready"
    assert (started, ready, retired) == (3, 3, 3)
    ready = up.ready(3)
    assert {r["revision"] for r in ready} == {2}
    for replica in ready:
        response = httpx.get(f"http://{replica['address']}/", trust_env=False)
        assert response.headers["X-App-Version"] == "v2"
