"""portero on the docker runtime, end to end against the real Docker Engine: the issue's acceptance, in order.

One portero (and one image build) serves the whole module: `up` builds the portal from examples/portal/Dockerfile
on the local base image and runs 3 containers; then stats against `docker stats`, a `docker kill`, a SIGKILL of
portero itself, and a Dockerfile that does not build. Every container and image it makes is removed at the end
(the images without their parent layers' build cache, which the next run reuses).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_docker
from tests.integration.portero_cli import PORTAL, Portero

pytestmark = pytest.mark.integration
BASE_IMAGE = os.environ.get("PORTERO_BASE_IMAGE", "portero/base:bookworm")


def docker_portal(context: Path = PORTAL) -> dict[str, object]:
    return {
        "build": {"context": str(context), "args": {"BASE_IMAGE": BASE_IMAGE}},
        "version": "v1",
        "env": {"WEB_CONCURRENCY": "1"},
        "replicas": {"initial": 3, "min": 1, "max": 10},
        "health": {"interval_s": 1, "start_period_s": 30},
        "resources": {"memory_mib": 256},
        "stop_grace_s": 5,
    }


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def containers(instance: str) -> dict[str, str]:
    """Name -> id of this portero's running containers, as the Engine lists them."""
    out = docker("ps", "--filter", f"label=portero.instance={instance}", "--format", "{{.Names}} {{.ID}}")
    return dict(line.split() for line in out.splitlines())


def docker_stats(name: str) -> tuple[float, float]:
    """CPU % and memory bytes as `docker stats` shows them."""
    row = json.loads(docker("stats", "--no-stream", "--format", "{{json .}}", name))
    used = row["MemUsage"].split("/")[0].strip()
    units = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "B": 1}
    unit = next(u for u in units if used.endswith(u))
    return float(row["CPUPerc"].rstrip("%")), float(used[: -len(unit)]) * units[unit]


@pytest.fixture(scope="module")
def portero(tmp_path_factory):
    require_docker()
    instance = Portero(tmp_path_factory.mktemp("docker-portero"))
    instance.write_spec({"portal": docker_portal()}, runtime="docker")
    yield instance
    if (instance.state / "admin.json").exists():
        instance.cli("down", check=False)
    instance.kill_everything()
    ident = (instance.state / "instance").read_text().strip()
    for container in docker("ps", "-aq", "--filter", f"label=portero.instance={ident}").split():
        docker("rm", "-f", container)
    import docker as sdk

    client = sdk.from_env()
    for image in client.images.list(filters={"label": f"portero.image.instance={ident}"}):
        client.images.remove(image.id, force=True, noprune=True)


@pytest.fixture(scope="module")
def up(portero):
    started = time.monotonic()
    portero.cli("up", "--detach", timeout=600)
    portero.ready(3)
    print(f"portero up with the docker runtime: 3 ready after {time.monotonic() - started:.1f} s (build included)")
    return portero


def instance_of(portero: Portero) -> str:
    return (portero.state / "instance").read_text().strip()


def test_up_builds_the_portal_image_and_runs_3_containers_each_on_its_port(up):
    replicas = up.replicas()
    assert len({r["port"] for r in replicas}) == 3
    running = containers(instance_of(up))
    assert len(running) == 3
    for replica in replicas:
        assert any(name.endswith(replica["id"]) for name in running)
        response = httpx.get(f"http://127.0.0.1:{replica['port']}/", trust_env=False)
        assert response.status_code == 200
        assert response.headers["X-App-Version"] == "v1"
    built = [e for e in up.events(service="portal") if e["kind"] == "image.build"]
    assert built
    assert built[-1]["message"].startswith("built portal as portero/portal:")
    labels = json.loads(docker("inspect", "--format", "{{json .Config.Labels}}", next(iter(running))))
    assert {"portero.service", "portero.revision", "portero.replica", "portero.instance"} <= set(labels)
    assert docker("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", next(iter(running))).strip() in {
        "",
        "no",
    }


def test_memory_agrees_with_docker_stats_within_10_percent(up):
    ident = instance_of(up)
    for replica in up.replicas():
        name = f"portero-{ident}-{replica['id']}"
        mine = up.get(f"/containers/{replica['id']}/stats")
        _, theirs = docker_stats(name)
        print(f"{replica['id']}: portero {mine['memory_bytes'] / 2**20:.1f} MiB, docker stats {theirs / 2**20:.1f} MiB")
        assert abs(mine["memory_bytes"] - theirs) <= 0.1 * theirs
        assert mine["memory_percent"] == pytest.approx(100 * mine["memory_bytes"] / (256 * 2**20), abs=0.1)
    # `portero status` shows the monitor's latest sample of the same figure.
    shown = up.wait("memory in the status", lambda: all(r.get("memory_bytes") for r in status_replicas(up)), 10)
    assert shown
    out = up.cli("status").stdout
    assert "MEM" in out
    assert "MiB" in out
    for replica in status_replicas(up):
        name = f"portero-{ident}-{replica['id']}"
        _, theirs = docker_stats(name)
        assert abs(replica["memory_bytes"] - theirs) <= 0.1 * theirs


def status_replicas(portero: Portero) -> list[dict[str, object]]:
    return [r for s in portero.get("/services")["services"] for r in s["replicas"]]


def test_cpu_under_a_steady_load_agrees_with_docker_stats_within_5_points(up):
    """One busy core in the container; both sides averaged over the same 6 s, so that other work on the machine
    (it has 2 cores, and CI runs other suites) moves both alike."""
    replica = up.replicas()[0]
    name = f"portero-{instance_of(up)}-{replica['id']}"
    burner = "echo $$ > /tmp/burn.pid; exec timeout 60 python3 -c 'while True: pass'"
    docker("exec", "-d", name, "sh", "-c", burner)
    try:
        time.sleep(1)
        watch = subprocess.Popen(
            ["docker", "stats", "--format", "{{.CPUPerc}}", name], stdout=subprocess.PIPE, text=True
        )
        mine = []
        up.get(f"/containers/{replica['id']}/stats")
        for _ in range(6):
            time.sleep(1)
            mine.append(up.get(f"/containers/{replica['id']}/stats")["cpu_percent"])
        watch.kill()  # the CLI does not end on SIGTERM while it streams
        frames = watch.communicate(timeout=10)[0].split("\x1b[J")  # the CLI redraws its screen once a second
        shown = [float(m[1]) for frame in frames if (m := re.search(r"([\d.]+)%", frame))]
        theirs = [v for i, v in enumerate(shown) if i > 0 and v != shown[i - 1]]  # a new sample each second
    finally:
        docker("exec", name, "sh", "-c", "kill $(cat /tmp/burn.pid)")
    mean_mine, mean_theirs = sum(mine) / len(mine), sum(theirs) / len(theirs)
    print(f"cpu under load: portero {mine} (mean {mean_mine:.1f}), docker stats {theirs} (mean {mean_theirs:.1f})")
    assert len(theirs) >= 4
    assert mean_theirs > 20  # the load is there
    assert abs(mean_mine - mean_theirs) <= 5


def test_docker_kill_is_healed_within_5_seconds_and_the_event_log_says_why(up):
    victim = up.replicas()[0]
    killed_at = time.monotonic()
    docker("kill", f"portero-{instance_of(up)}-{victim['id']}")

    def healed() -> dict[str, object] | None:
        now = next(r for r in up.replicas() if r["id"] == victim["id"])
        return now if now["state"] == "ready" and now["restarts"] == victim["restarts"] + 1 else None

    up.wait("the killed container ready again", healed, timeout_s=10)
    took = time.monotonic() - killed_at
    print(f"docker kill -> ready again in {took:.2f} s")
    assert took < 5
    why = [e["message"] for e in up.events(service="portal") if e["subject"] == victim["id"]]
    assert any("killed by signal 9" in message and "restart #1" in message for message in why)
    assert len(containers(instance_of(up))) == 3


def test_after_a_sigkill_of_portero_the_3_containers_are_adopted_none_added_none_removed(up):
    before = containers(instance_of(up))
    ids = {r["id"] for r in up.replicas()}
    os.kill(up.pid(), signal.SIGKILL)
    up.wait("portero gone", lambda: not _alive(up), timeout_s=10)
    assert containers(instance_of(up)) == before  # the containers outlive portero
    restarted_at = time.time()
    up.cli("up", "--detach", timeout=300)
    up.ready(3)
    assert {r["id"] for r in up.replicas()} == ids
    assert containers(instance_of(up)) == before  # the very same containers
    since = [e for e in up.events(since=restarted_at)]
    assert {e["subject"] for e in since if e["kind"] == "replica.adopted"} == ids
    assert not [e for e in since if e["kind"] in {"replica.created", "replica.started", "replica.stray"}]


def test_a_dockerfile_that_fails_to_build_is_refused_with_its_output_and_nothing_running_changes(up, tmp_path):
    before = containers(instance_of(up))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo 'portal: missing dependency' && exit 3\n"
    )
    good = up.spec_file.read_text()
    up.write_spec({"portal": docker_portal(broken)}, runtime="docker")
    try:
        result = up.cli("apply", check=False, timeout=300)
    finally:
        up.spec_file.write_text(good)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"image build of portal failed at Step 3/\d+ : RUN echo", output)
    assert "portal: missing dependency" in output  # the failing step's own output
    assert "returned a non-zero code: 3" in output
    time.sleep(1)
    assert containers(instance_of(up)) == before
    assert [r["revision"] for r in up.replicas()] == [1, 1, 1]
    assert len(up.ready(3)) == 3
    failed = [e for e in up.events(service="portal") if e["kind"] == "image.failed"]
    assert "portal: missing dependency" in failed[-1]["message"]


def _alive(portero: Portero) -> bool:
    try:
        os.kill(portero.pid(), 0)
    except (OSError, ValueError):
        return False
    return True
