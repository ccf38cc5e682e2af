"""One contract, every runtime: the same transcript against real processes, Docker containers and Swarm tasks.

What the supervisor relies on, whatever runs the replica: its own port on loopback, a graceful stop that
escalates to SIGKILL, exits reported with code or signal, output in the shared log format, adoption by a new
runtime (and refusal of a stranger), stats, strays reaped, and nothing left behind once a replica is forgotten.
Without a Docker Engine the docker and swarm cases skip and say why (they fail under PORTERO_REQUIRE_ALL=1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from portero.logs import LINE
from portero.replicas import Process
from portero.runtimes.base import Exit, Launch, Runtime, RuntimeFailure
from portero.runtimes.process import ProcessRuntime
from portero.spec.models import Build, DockerSettings, ServiceSpec, SwarmSettings
from tests.conftest import REQUIRE_ALL, require_docker

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures"
TINY = FIXTURES / "tiny_app.py"
BASE_IMAGE = os.environ.get("PORTERO_BASE_IMAGE", "portero/base:bookworm")
SYSTEM_PYTHON = "/usr/bin/python3"  # another user cannot reach the venv's Python under /root


def _revision(replica_id: str) -> int:
    return int(replica_id.split("-")[1])  # ids read `SERVICE-REVISION-XXXX`, as the supervisor makes them


@dataclass
class Kind:
    """How the suite drives one runtime: make it, launch the tiny app on it, kill the app from outside."""

    name: str
    make: Callable[[Path], Any]
    launch: Callable[[str, dict[str, str]], Launch]
    kill_app: Callable[[Any, str, Process], None]
    leftovers: Callable[[Any], list[str]]


def _process_kind() -> Kind:
    def launch(replica_id: str, env: dict[str, str]) -> Launch:
        return Launch(replica_id, "tiny", _revision(replica_id), (sys.executable, str(TINY)), None, env)

    def kill_app(runtime: ProcessRuntime, replica_id: str, process: Process) -> None:
        psutil.Process(process.pid).children()[0].kill()

    def leftovers(runtime: ProcessRuntime) -> list[str]:
        return [str(pid) for pid in runtime._children if psutil.pid_exists(pid)]

    return Kind("process", lambda state: ProcessRuntime(state, log_max_bytes=4096), launch, kill_app, leftovers)


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory):
    """The tiny app as an image, built once per session through the docker runtime's own `prepare`."""
    require_docker()
    import docker

    from portero.runtimes.docker import DockerRuntime

    state = tmp_path_factory.mktemp("image-build")
    spec = ServiceSpec(
        build=Build(context=str(FIXTURES), dockerfile="tiny.Dockerfile", args={"BASE_IMAGE": BASE_IMAGE}),
    )
    builder = DockerRuntime(state, DockerSettings())
    built = asyncio.run(builder.prepare("tiny", spec, state, None))
    assert built.image is not None
    yield built.image
    client = docker.from_env()  # this session's image only: another run on the machine may be using its own
    for image in client.images.list(filters={"label": f"portero.image.instance={builder.instance}"}):
        client.images.remove(image.id, force=True, noprune=True)


def _container_kind(name: str, image: str) -> Kind:
    import docker

    from portero.runtimes.docker import DockerRuntime
    from portero.runtimes.swarm import SwarmRuntime

    client = docker.from_env()
    cls = DockerRuntime if name == "docker" else SwarmRuntime

    def launch(replica_id: str, env: dict[str, str]) -> Launch:
        spec = ServiceSpec(image=image, stop_grace_s=5)
        return Launch(replica_id, "tiny", _revision(replica_id), (), None, env, 5000, spec)

    def kill_app(runtime: Any, replica_id: str, process: Process) -> None:
        if name == "docker":
            client.api.kill(runtime.container_name(replica_id), "SIGKILL")
        else:
            client.api.kill(runtime._placed[replica_id].container, "SIGKILL")

    def leftovers(runtime: Any) -> list[str]:
        label = {"label": f"portero.instance={runtime.instance}"}
        found = [c["Names"][0] for c in client.api.containers(all=True, filters=label)]
        return found + [s["Spec"]["Name"] for s in client.api.services(filters=label)]

    return Kind(name, lambda state: cls(state, DockerSettings(), log_max_bytes=4096), launch, kill_app, leftovers)


def _clean(runtime: Any) -> None:
    """Whatever a failed test left behind, by the runtime's instance label only."""
    import docker

    client = docker.from_env()
    label = {"label": f"portero.instance={runtime.instance}"}
    for service in client.api.services(filters=label):
        client.api.remove_service(service["ID"])
    for container in client.api.containers(all=True, filters=label):
        client.api.remove_container(container["Id"], force=True)


@pytest.fixture(params=["process", "docker", "swarm"])
def kind(request) -> Kind:
    if request.param == "process":
        return _process_kind()
    require_docker(swarm=request.param == "swarm")
    return _container_kind(request.param, request.getfixturevalue("tiny_image"))


@pytest.fixture
def runtime(kind, tmp_path):
    made = kind.make(tmp_path)
    yield made
    if kind.name == "process":
        for pid in list(made._children):
            os.killpg(pid, signal.SIGKILL)
    else:
        for follower in list(made._followers.values()):
            follower.stop()
        _clean(made)


async def wait_http(process: Process, path: str = "/health", deadline_s: float = 10.0) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        end = time.monotonic() + deadline_s
        while True:
            try:
                return await client.get(f"http://{process.host}:{process.port}{path}", timeout=0.5)
            except httpx.HTTPError:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.05)


async def wait_exit(runtime: Runtime, replica_id: str, process: Process, deadline_s: float = 10.0) -> Exit:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ended = await runtime.poll(replica_id, process)
        if ended is not None:
            return ended
        await asyncio.sleep(0.05)
    raise AssertionError(f"replica {replica_id} still runs after {deadline_s} s")


async def test_each_replica_answers_on_its_own_loopback_port(kind, runtime):
    a = await runtime.start(kind.launch("tiny-1-000a", {}))
    b = await runtime.start(kind.launch("tiny-1-000b", {}))
    assert a.port != b.port
    assert a.host == b.host == "127.0.0.1"
    assert (await wait_http(a)).status_code == 200
    assert (await wait_http(b)).status_code == 200
    assert await runtime.poll("tiny-1-000a", a) is None
    for replica_id, process in (("tiny-1-000a", a), ("tiny-1-000b", b)):
        await runtime.stop(replica_id, process, grace_s=5)


async def test_a_graceful_stop_sends_sigterm_and_reports_a_clean_exit(kind, runtime):
    process = await runtime.start(kind.launch("tiny-1-0001", {}))
    await wait_http(process)
    started = time.monotonic()
    ended = await runtime.stop("tiny-1-0001", process, grace_s=5)
    assert ended is not None
    assert ended.code == 0  # the app's own SIGTERM handler ran
    assert time.monotonic() - started < 3


async def test_a_stop_escalates_to_sigkill_after_the_grace_period(kind, runtime, caplog):
    process = await runtime.start(kind.launch("tiny-1-0001", {"TINY_IGNORE_TERM": "1"}))
    await wait_http(process)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="portero.runtimes.ladder"):
        ended = await runtime.stop("tiny-1-0001", process, grace_s=1)
    assert ended is not None
    assert ended.signal == 9
    assert 1 <= time.monotonic() - started < 5
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "portero.runtimes.ladder"] == [
        ("INFO", "replica tiny-1-0001: SIGTERM, waiting up to 1.0 s"),  # every runtime climbs the same ladder
        ("WARNING", f"replica tiny-1-0001: SIGKILL, waiting up to {runtime.kill_wait_s:.1f} s"),
    ]


async def test_a_crash_is_reported_with_its_code_and_its_output_is_kept(kind, runtime):
    process = await runtime.start(kind.launch("tiny-1-0001", {"TINY_EXIT": "3"}))
    ended = await wait_exit(runtime, "tiny-1-0001", process)
    assert (ended.code, ended.signal) == (3, None)
    log = runtime.log_path("tiny-1-0001")
    deadline = time.monotonic() + 10
    wanted = ("exited with code 3", " stderr exiting at once")  # how it ended, and what it said first
    while not all(line in (log.read_text() if log.exists() else "") for line in wanted):
        assert time.monotonic() < deadline, f"no exit line or no output in {log}"
        await asyncio.sleep(0.05)
    text = log.read_text()
    assert " stderr exiting at once" in text
    assert all(LINE.match(line) for line in text.splitlines())


async def test_a_kill_9_from_outside_is_seen_as_signal_9(kind, runtime):
    process = await runtime.start(kind.launch("tiny-1-0001", {}))
    await wait_http(process)
    kind.kill_app(runtime, "tiny-1-0001", process)
    ended = await wait_exit(runtime, "tiny-1-0001", process)
    assert ended.signal == 9
    assert ended.describe() == "killed by signal 9"


async def test_output_reaches_the_replica_log_in_the_shared_format(kind, runtime):
    process = await runtime.start(kind.launch("tiny-1-0001", {}))
    await wait_http(process)
    async with httpx.AsyncClient(trust_env=False) as client:
        for n in range(20):
            await client.get(f"http://{process.host}:{process.port}/line-{n:02d}")
    log = runtime.log_path("tiny-1-0001")
    deadline = time.monotonic() + 5
    while "served /line-19 with 200" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the last request's line never reached the log"
        await asyncio.sleep(0.05)
    lines = log.read_text().splitlines()
    assert all(LINE.match(line) for line in lines)  # `<ISO time>Z <stream> <text>`, what `portero logs` parses
    assert any(" stdout served /line-00 with 200" in line for line in lines)
    await runtime.stop("tiny-1-0001", process, grace_s=5)


async def test_a_new_runtime_adopts_a_running_replica_and_refuses_a_stranger(kind, runtime, tmp_path):
    process = await runtime.start(kind.launch("tiny-1-0001", {}))
    await wait_http(process)
    successor = kind.make(tmp_path)  # as after a restart of portero
    try:
        assert await successor.adopt("tiny-1-0001", process)
        assert await successor.poll("tiny-1-0001", process) is None
        forged = dataclasses.replace(process, started_token=process.started_token + 1)  # a recycled name or pid
        assert not await kind.make(tmp_path).adopt("tiny-1-0001", forged)
        ended = await successor.stop("tiny-1-0001", process, grace_s=5)
        assert ended is not None
        assert ended.code == 0  # read without being the parent
    finally:
        for follower in list(getattr(successor, "_followers", {}).values()):
            follower.stop()


async def test_stats_measure_the_replica(kind, runtime):
    process = await runtime.start(kind.launch("tiny-1-0001", {}))
    await wait_http(process)
    stats = await runtime.stats("tiny-1-0001", process)
    assert 5 * 2**20 < stats.memory_bytes < 200 * 2**20  # a small Python server
    assert 0 <= stats.cpu_percent < 100
    assert stats.processes >= 1
    assert 0 < stats.memory_percent < 100
    await runtime.stop("tiny-1-0001", process, grace_s=5)


async def test_replicas_unknown_to_the_store_are_reaped(kind, runtime, tmp_path):
    known = await runtime.start(kind.launch("tiny-1-000a", {}))
    stray = await runtime.start(kind.launch("tiny-2-000b", {}))  # another revision: a stray swarm service too
    await wait_http(stray)
    reaped = await kind.make(tmp_path).reap_strays({"tiny-1-000a"})
    assert len(reaped) == 1
    assert reaped[0].endswith("tiny-2-000b")  # the replica, or on Swarm its service
    await wait_exit(runtime, "tiny-2-000b", stray)
    assert await runtime.poll("tiny-1-000a", known) is None
    await runtime.stop("tiny-1-000a", known, grace_s=5)


async def test_a_forgotten_replica_leaves_nothing_behind(kind, runtime):
    process = await runtime.start(kind.launch("tiny-1-0001", {}))
    await wait_http(process)
    await runtime.stop("tiny-1-0001", process, grace_s=5)
    await runtime.forget("tiny-1-0001")
    assert not runtime.log_path("tiny-1-0001").parent.exists()
    deadline = time.monotonic() + 10
    while kind.leftovers(runtime):  # Swarm removes a removed service's containers a moment later
        assert time.monotonic() < deadline, f"left behind: {kind.leftovers(runtime)}"
        await asyncio.sleep(0.1)


async def test_what_cannot_start_is_a_final_failure(kind, runtime):
    launch = kind.launch("tiny-1-0001", {})
    if kind.name == "process":
        launch = dataclasses.replace(launch, command=("no-such-command-portero",))
    else:
        assert launch.spec is not None
        launch = dataclasses.replace(launch, spec=launch.spec.model_copy(update={"image": "portero/absent:0"}))
    with pytest.raises(RuntimeFailure) as info:
        await runtime.start(launch)
    assert info.value.retryable is False


async def test_a_replica_runs_as_the_spec_user_without_portero_secrets(kind, runtime, monkeypatch, request):
    """`user`/`group`: the process runtime drops to them (as root), the container runtimes set the container's."""
    if kind.name == "process" and os.geteuid() != 0:
        message = "the process runtime runs replicas as another user only as root (CI runs as root)"
        pytest.fail(message) if REQUIRE_ALL else pytest.skip(message)
    monkeypatch.setenv("PORTERO_TOKEN", "prt_" + "s" * 43)  # in portero's own environment
    launch = kind.launch("tiny-1-0001", {})
    spec = launch.spec or ServiceSpec(command=launch.command)
    launch = dataclasses.replace(launch, spec=spec.model_copy(update={"user": "65534", "group": "65534"}))
    if kind.name == "process":
        # The app from a copy the user `nobody` can read: the checkout may sit in a 0700 directory (`mktemp -d`).
        readable = Path(tempfile.mkdtemp(prefix="portero-tiny-"))
        request.addfinalizer(lambda: shutil.rmtree(readable))
        readable.chmod(0o755)
        app = Path(shutil.copy(launch.command[1], readable))
        app.chmod(0o644)
        launch = dataclasses.replace(launch, command=(SYSTEM_PYTHON, str(app), *launch.command[2:]))
    process = await runtime.start(launch)
    assert (await wait_http(process, "/id")).text == "65534:65534\n"
    assert (await wait_http(process, "/env/PORTERO_TOKEN")).text == "-\n"
    await runtime.stop("tiny-1-0001", process, grace_s=5)


async def test_a_swarm_task_whose_node_engine_does_not_answer_is_stopped_by_swarm(tiny_image, tmp_path, caplog):
    """The one-rung ladder: no Engine of the task's node answers (here: configured at a socket nobody serves),
    so the service is scaled to 0 and Swarm itself stops the task, SIGTERM then SIGKILL after its grace."""
    require_docker(swarm=True)
    import docker

    from portero.runtimes.swarm import SwarmRuntime

    client = docker.from_env()
    node_id = client.info()["Swarm"]["NodeID"]
    settings = DockerSettings(swarm=SwarmSettings(engines={node_id: "unix:///nonexistent/portero-test.sock"}))
    runtime = SwarmRuntime(tmp_path, settings, log_max_bytes=4096)
    spec = ServiceSpec(image=tiny_image, stop_grace_s=1)
    launch = Launch("tiny-1-0001", "tiny", 1, (), None, {"TINY_IGNORE_TERM": "1"}, 5000, spec)
    try:
        process = await runtime.start(launch)
        await wait_http(process)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="portero.runtimes.ladder"):
            ended = await runtime.stop("tiny-1-0001", process, grace_s=1)
        # Its exit code when the task is read before Swarm's task reaper deletes it (a scaled-down slot's task
        # goes once it ended), else unknown.
        assert ended.signal == 9 or ended.code == -1
        assert 1 <= time.monotonic() - started < 10  # the grace its ignored SIGTERM took, then Swarm's SIGKILL
        assert client.api.containers(filters={"label": f"portero.instance={runtime.instance}"}) == []  # none runs
        assert [r.getMessage() for r in caplog.records if r.name == "portero.runtimes.ladder"] == [
            f"replica tiny-1-0001: scale to 0 through Swarm, waiting up to {1 + runtime.kill_wait_s:.1f} s"
        ]
    finally:
        for follower in list(runtime._followers.values()):
            follower.stop()
        _clean(runtime)


async def test_a_swarm_task_that_ended_before_start_looked_is_a_crash_not_a_failure_to_start(
    tiny_image, tmp_path, monkeypatch
):
    """Start looks at its task now and then: one that ran and exited in between (here: at once, looked at 5 s
    after) is a crash with its exit code, as with the other runtimes, not a start that failed (CI saw this race)."""
    require_docker(swarm=True)
    from portero.runtimes import swarm

    kind = _container_kind("swarm", tiny_image)
    runtime = kind.make(tmp_path)
    monkeypatch.setattr(swarm, "POLL_S", 5.0)
    try:
        process = await runtime.start(kind.launch("tiny-1-0001", {"TINY_EXIT": "3"}))
        ended = await wait_exit(runtime, "tiny-1-0001", process)
        assert (ended.code, ended.signal) == (3, None)
    finally:
        for follower in list(runtime._followers.values()):
            follower.stop()
        _clean(runtime)
