"""The process runtime against real processes on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from portero.logs import LINE
from portero.replicas import Process
from portero.runtimes.base import Launch, RuntimeFailure
from portero.runtimes.process import ProcessRuntime

pytestmark = pytest.mark.integration
TINY = Path(__file__).parents[1] / "fixtures" / "tiny_app.py"


def launch(replica_id: str = "tiny-1-0001", **env: str) -> Launch:
    return Launch(replica_id, "tiny", 1, (sys.executable, str(TINY)), None, dict(env))


async def wait_http(port: int, deadline_s: float = 5.0) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        end = time.monotonic() + deadline_s
        while True:
            try:
                return await client.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
            except httpx.HTTPError:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.05)


@pytest.fixture
async def runtime(tmp_path):
    rt = ProcessRuntime(tmp_path, log_max_bytes=4096)
    yield rt
    for pid in list(rt._children):  # whatever a failed test left behind
        os.killpg(pid, signal.SIGKILL)


async def test_replica_runs_in_its_own_group_on_its_own_port(runtime):
    a = await runtime.start(launch("tiny-1-000a"))
    b = await runtime.start(launch("tiny-1-000b"))
    assert a.port != b.port
    assert (await wait_http(a.port)).text == "tiny-1-000a /health\n"
    assert os.getpgid(a.pid) == a.pid  # leads its own process group
    assert os.getpgid(a.pid) != os.getpgid(os.getpid())
    assert await runtime.poll("tiny-1-000a", a) is None
    for rid, proc in (("tiny-1-000a", a), ("tiny-1-000b", b)):
        await runtime.stop(rid, proc, grace_s=5)


async def test_graceful_stop_uses_sigterm(runtime):
    proc = await runtime.start(launch())
    await wait_http(proc.port)
    started = time.monotonic()
    ended = await runtime.stop("tiny-1-0001", proc, grace_s=5)
    assert ended is not None
    assert ended.code == 0  # the app's own SIGTERM handler ran
    assert time.monotonic() - started < 2


async def test_stop_escalates_to_sigkill_after_the_grace_period(runtime):
    proc = await runtime.start(launch(TINY_IGNORE_TERM="1"))
    await wait_http(proc.port)
    app_pid = psutil.Process(proc.pid).children()[0].pid
    started = time.monotonic()
    await runtime.stop("tiny-1-0001", proc, grace_s=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert not psutil.pid_exists(app_pid) or psutil.Process(app_pid).status() == psutil.STATUS_ZOMBIE


async def test_crash_is_reported_with_its_code_and_output_kept(runtime):
    proc = await runtime.start(launch(TINY_EXIT="3"))
    for _ in range(100):
        ended = await runtime.poll("tiny-1-0001", proc)
        if ended is not None:
            break
        await asyncio.sleep(0.05)
    assert ended is not None
    assert (ended.code, ended.signal) == (3, None)
    text = runtime.log_path("tiny-1-0001").read_text()
    assert " stderr exiting at once" in text
    assert " portero process exited with code 3" in text


async def test_kill_9_of_the_app_is_seen_as_signal_9(runtime):
    proc = await runtime.start(launch())
    await wait_http(proc.port)
    app = psutil.Process(proc.pid).children()[0]
    app.kill()
    for _ in range(100):
        ended = await runtime.poll("tiny-1-0001", proc)
        if ended is not None:
            break
        await asyncio.sleep(0.05)
    assert ended is not None
    assert ended.signal == 9
    assert ended.describe() == "killed by signal 9"


async def test_an_exit_is_announced_at_once_even_when_an_orphan_holds_the_output(runtime):
    """The supervisor is woken by the runtime (a pidfd) instead of finding the exit at its next pass, and the shim
    no longer waits for an orphaned worker that keeps the app's output pipes open (it waited 0.3 s per pipe)."""
    ended = asyncio.Event()
    runtime.exit_hooks.append(ended.set)
    parent = "import subprocess, time; subprocess.Popen(['sleep', '30']); print('up', flush=True); time.sleep(60)"
    proc = await runtime.start(Launch("orphan-1-0001", "orphan", 1, (sys.executable, "-c", parent), None, {}))
    deadline = time.monotonic() + 10
    while len(psutil.Process(proc.pid).children(recursive=True)) < 2:  # the app and its worker
        assert time.monotonic() < deadline, "the app did not start its worker"
        await asyncio.sleep(0.05)
    app = psutil.Process(proc.pid).children()[0]
    app.kill()
    killed_at = time.monotonic()
    await asyncio.wait_for(ended.wait(), 5)  # no poll() call: only the pidfd can have said so
    announced_after = time.monotonic() - killed_at
    print(f"exit announced {announced_after:.3f} s after the kill")
    assert announced_after < 0.55  # the two pipe waits alone took 0.6 s
    exit_ = await runtime.poll("orphan-1-0001", proc)
    assert exit_ is not None
    assert exit_.signal == 9


async def test_unknown_command_is_a_final_failure(runtime):
    bad = Launch("tiny-1-0001", "tiny", 1, ("no-such-command-portero",))
    with pytest.raises(RuntimeFailure, match="command not found: 'no-such-command-portero'") as info:
        await runtime.start(bad)
    assert info.value.retryable is False


async def test_a_new_runtime_adopts_a_running_replica_and_refuses_a_stranger(runtime, tmp_path):
    proc = await runtime.start(launch())
    await wait_http(proc.port)
    successor = ProcessRuntime(tmp_path)  # as after a restart of portero
    assert await successor.adopt("tiny-1-0001", proc)
    assert await successor.poll("tiny-1-0001", proc) is None
    forged = type(proc)(proc.host, proc.port, proc.pid, proc.started_token + 1)  # pid reused by another process
    assert not await successor.adopt("tiny-1-0001", forged)
    ended = await successor.stop("tiny-1-0001", proc, grace_s=5)
    assert ended is not None
    assert ended.code == 0  # read from the shim's exit file: the successor is not the parent


async def test_output_is_captured_with_timestamps_and_rotated_within_its_bound(runtime):
    proc = await runtime.start(launch())
    await wait_http(proc.port)
    async with httpx.AsyncClient(trust_env=False) as client:
        for n in range(200):
            await client.get(f"http://127.0.0.1:{proc.port}/line-{n:03d}")
    await runtime.stop("tiny-1-0001", proc, grace_s=5)
    log = runtime.log_path("tiny-1-0001")
    files = sorted(log.parent.glob("replica.log*"))
    assert len(files) >= 2  # rotated
    assert all(f.stat().st_size <= 4096 + 200 for f in files)
    assert any("served /line-199 with 200" in f.read_text() for f in files)
    lines = log.read_text().splitlines()
    assert lines
    assert all(LINE.match(line) for line in lines)  # `<ISO time>Z <stream> <text>`, what `portero logs` parses


async def test_stats_measure_the_replica_process_tree(runtime):
    proc = await runtime.start(launch())
    await wait_http(proc.port)
    stats = await runtime.stats("tiny-1-0001", proc)
    leader = psutil.Process(proc.pid)
    expected = sum(p.memory_info().rss for p in [leader, *leader.children(recursive=True)])
    assert stats.processes == 2
    assert stats.app_pid == leader.children()[0].pid
    assert abs(stats.memory_bytes - expected) / expected < 0.1
    assert 0 <= stats.cpu_percent < 100
    await runtime.stop("tiny-1-0001", proc, grace_s=5)


async def test_a_dead_adopted_replica_never_takes_a_stranger_with_it(runtime):
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)  # noqa: ASYNC220 - owns the recorded pid
    try:
        recycled = Process("127.0.0.1", 1, stranger.pid, started_token=1.0)  # recorded long before it started
        ended = await runtime.poll("tiny-1-0001", recycled)
        assert ended is not None
        assert ended.describe() == "exited (status unknown)"
        await asyncio.sleep(0.1)
        assert stranger.poll() is None  # still running: portero did not signal its group
    finally:
        stranger.kill()
        stranger.wait()


async def test_shims_unknown_to_the_store_are_reaped(runtime, tmp_path):
    known = await runtime.start(launch("tiny-1-000a"))
    stray = await runtime.start(launch("tiny-1-000b"))
    await wait_http(stray.port)
    reaped = await ProcessRuntime(tmp_path).reap_strays({"tiny-1-000a"})
    assert reaped == ["tiny-1-000b"]
    for _ in range(100):
        if await runtime.poll("tiny-1-000b", stray) is not None:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the stray replica is still running")
    assert await runtime.poll("tiny-1-000a", known) is None
    await runtime.stop("tiny-1-000a", known, grace_s=5)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def app_pid(proc: Process) -> int:
    for _ in range(100):
        children = psutil.Process(proc.pid).children()
        if children:
            return children[0].pid
        await asyncio.sleep(0.05)
    raise AssertionError("the app did not start")


async def test_a_replica_gets_no_secret_of_portero_only_the_documented_variables(runtime, monkeypatch):
    monkeypatch.setenv("PORTERO_TOKEN", "prt_" + "s" * 43)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-cloud-secret")
    monkeypatch.setenv("TZ", "America/Santiago")
    proc = await runtime.start(launch(GIVEN="by the spec"))
    await wait_http(proc.port)
    env = environ_of(await app_pid(proc))
    assert "PORTERO_TOKEN" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert not [value for value in env.values() if "prt_" in value or "fake-cloud-secret" in value]
    assert env["TZ"] == "America/Santiago"
    assert env["GIVEN"] == "by the spec"
    assert env["PORT"] == str(proc.port)
    assert env["PATH"].startswith(str(Path(sys.executable).parent))
    await runtime.stop("tiny-1-0001", proc, grace_s=5)


DAEMONIZING = Path(__file__).parents[1] / "fixtures" / "daemonizing_app.py"  # setsid, double fork, deaf to SIGTERM


async def daemon_of(runtime: ProcessRuntime, replica_id: str, proc: Process) -> int:
    for _ in range(100):
        log = runtime.log_path(replica_id)
        lines = log.read_text().splitlines() if log.exists() else []
        found = [line.split()[-1] for line in lines if " daemon " in line]
        # Once its parent (the middle fork) has exited: the daemon may print before that.
        if found and psutil.Process(int(found[0])).ppid() == proc.pid:
            daemon = int(found[0])
            assert os.getpgid(daemon) != proc.pid  # out of the replica's process group, but adopted by the shim
            return daemon
        await asyncio.sleep(0.05)
    raise AssertionError("no daemon of the app was adopted by the shim")


def gone(pid: int, within_s: float = 2.0) -> bool:
    """Ended (a zombie counts) within `within_s`: a SIGKILL takes effect a moment after it is sent."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def daemonizing(replica_id: str, **env: str) -> Launch:
    return Launch(replica_id, "daemon", 1, (sys.executable, str(DAEMONIZING)), None, dict(env))


async def test_a_daemonized_descendant_is_stopped_with_its_replica_and_reported(runtime):
    proc = await runtime.start(daemonizing("daemon-1-0001"))
    daemon = await daemon_of(runtime, "daemon-1-0001", proc)
    ended = await runtime.stop("daemon-1-0001", proc, grace_s=5)
    assert ended is not None
    assert ended.code == 0  # the app itself stopped on SIGTERM; its daemon had to be killed
    assert gone(daemon)
    assert [k.split()[0] for k in ended.killed] == [str(daemon)]
    assert ended.describe() == f"exited with code 0; had to kill 1 process(es): {ended.killed[0]}"
    assert f"ended 1 process(es) the app left running: {daemon} " in runtime.log_path("daemon-1-0001").read_text()


async def test_a_crashed_app_leaves_no_daemon_behind(runtime):
    proc = await runtime.start(daemonizing("daemon-1-0002", CRASH="1"))
    daemon = await daemon_of(runtime, "daemon-1-0002", proc)
    for _ in range(100):
        ended = await runtime.poll("daemon-1-0002", proc)
        if ended is not None:
            break
        await asyncio.sleep(0.05)
    assert ended is not None
    assert ended.code == 3
    assert gone(daemon)
    assert "had to kill 1 process(es)" in ended.describe()


async def test_sigkill_reaches_descendants_outside_the_group(runtime):
    proc = await runtime.start(daemonizing("daemon-1-0003"))
    daemon = await daemon_of(runtime, "daemon-1-0003", proc)
    app = await app_pid(proc)
    os.kill(app, signal.SIGSTOP)  # deaf to SIGTERM: the grace runs out
    ended = await runtime.stop("daemon-1-0003", proc, grace_s=0.5)
    assert ended is not None
    assert gone(daemon)
    assert gone(app)
    assert {k.split()[0] for k in ended.killed} == {str(daemon), str(app)}
