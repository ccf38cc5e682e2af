"""portero end to end: the CLI, the daemon, real portal replicas under gunicorn, on loopback."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.conftest import require_tool
from tests.integration.portero_cli import portal_service

pytestmark = pytest.mark.integration


@pytest.fixture
def running(portero):
    portero.write_spec({"portal": portal_service(replicas=3)})
    portero.cli("up", "--detach")
    portero.ready(3)
    return portero


def test_up_serves_the_portal_on_every_replica_and_status_shows_them(running):
    replicas = running.replicas()
    assert len({r["port"] for r in replicas}) == 3
    for replica in replicas:
        response = httpx.get(f"http://127.0.0.1:{replica['port']}/", trust_env=False)
        assert response.status_code == 200
        assert "Barrio" in response.text
        assert response.headers["X-App-Version"] == "v1"
        assert response.headers["X-Replica"] == replica["id"]
    out = running.cli("status").stdout
    assert "3/3 ready" in out
    for replica in replicas:
        assert replica["id"] in out
        assert f"127.0.0.1:{replica['port']}" in out
        assert str(replica["pid"]) in out
    for column in ("UPTIME", "RESTARTS", "PID", "ADDRESS"):
        assert column in out


def test_kill_9_of_a_replica_is_healed_within_3_seconds_and_explained(running):
    victim = running.replicas()[0]
    stats = running.get(f"/containers/{victim['id']}/stats")
    os.kill(stats["app_pid"], signal.SIGKILL)
    killed_at = time.monotonic()

    def back() -> bool:
        replica = next(r for r in running.replicas() if r["id"] == victim["id"])
        return replica["state"] == "ready" and replica["restarts"] == 1

    running.wait("the killed replica to be ready again", back, timeout_s=10, step_s=0.02)
    assert time.monotonic() - killed_at < 3.0
    reasons = [e["message"] for e in running.events() if e["subject"] == victim["id"]]
    assert any("killed by signal 9" in m and "restart #1" in m for m in reasons), reasons


def test_a_crashing_replica_backs_off_with_growing_delays_while_others_serve(portero):
    crash = {"command": [sys.executable, "-c", "import sys; sys.exit(3)"], "replicas": {"initial": 1}}
    portero.write_spec({"portal": portal_service(replicas=2), "broken": crash})
    portero.cli("up", "--detach", "--wait-s", "3", check=False)  # `broken` never gets ready
    ports = [r["port"] for r in portero.ready(2) if r["service"] == "portal"]
    failures = 0
    end = time.monotonic() + 7.5
    while time.monotonic() < end:
        for port in ports:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=1).status_code == 200
            except httpx.HTTPError:
                ok = False
            failures += not ok
        time.sleep(0.1)
    assert failures == 0
    restarts = [e for e in portero.events(service="broken") if e["kind"] == "replica.restarting"]
    delays = [e["data"]["delay_s"] for e in restarts]
    assert delays[:3] == [1, 2, 4], delays  # 1 s, doubling: never a busy loop
    assert all("exited with code 3" in e["message"] for e in restarts)
    starts = [e["at"] for e in portero.events(service="broken") if e["kind"] == "replica.started"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.9 for gap in gaps), gaps


def test_killed_portero_adopts_its_replicas_and_down_leaves_nothing(running):
    before = {r["id"]: r["pid"] for r in running.replicas()}
    groups = running.group_pids()
    os.kill(running.pid(), signal.SIGKILL)
    time.sleep(0.3)
    assert all(alive(pid) for pid in before.values())  # replicas outlive portero
    restarted_at = time.time()
    running.cli("up", "--detach")
    after = {r["id"]: r["pid"] for r in running.ready(3)}
    assert after == before  # the same processes, none added
    assert len(running.replicas()) == 3
    adopted = [e["subject"] for e in running.events() if e["kind"] == "replica.adopted"]
    assert sorted(adopted) == sorted(before)
    assert not [e for e in running.events() if e["kind"] == "replica.created" and e["at"] >= restarted_at]
    running.cli("down")
    assert not [pid for pid in groups if alive(pid)]
    pgrep = require_tool("pgrep", "the acceptance check counts portal processes with it")
    groups = ",".join(str(pid) for pid in before.values())
    found = subprocess.run([pgrep, "-g", groups, "-f", "main:app"], capture_output=True, text=True)
    assert found.returncode == 1  # pgrep: no process matched
    assert not [
        p for p in psutil.process_iter(["environ"]) if (p.info["environ"] or {}).get("PORTERO_REPLICA_ID") in before
    ]


def test_scale_up_and_down_from_the_cli(running):
    running.cli("scale", "portal", "5")
    running.ready(5)
    running.cli("scale", "portal", "2")
    running.wait("two replicas left", lambda: len(running.replicas()) == 2)
    out = running.cli("scale", "portal", "11", check=False)
    assert out.returncode == 1
    assert "outside the spec's limits 0..10" in out.stderr
    assert "Traceback" not in out.stderr


def test_stop_and_start_a_replica_through_the_api(running):
    victim = running.replicas()[1]["id"]
    stopped = running.http.post(f"{running.url}/containers/{victim}/stop").json()
    assert stopped["state"] == "stopping"
    running.wait("the replica to stop", lambda: running.get("/containers/list")["containers"][1]["state"] == "stopped")
    time.sleep(1.5)
    assert [r["state"] for r in running.replicas()].count("ready") == 2  # held: not restarted nor replaced
    running.http.post(f"{running.url}/containers/{victim}/start").raise_for_status()
    running.ready(3)
    missing = running.http.post(f"{running.url}/containers/portal-9-dead/stop")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no replica named 'portal-9-dead'"
    assert running.http.get(f"{running.url}/containers/nope/stats").status_code == 404


def test_a_refused_spec_changes_nothing_that_runs(running):
    before = {r["id"]: r["pid"] for r in running.replicas()}
    running.spec_file.write_text(running.spec_file.read_text().replace('"initial": 3', '"initial": -1'))
    out = running.cli("apply", check=False)
    assert out.returncode == 1
    assert "services.portal.replicas.initial" in out.stderr
    assert "greater than or equal to 0" in out.stderr
    response = running.http.put(f"{running.url}/spec", json={"yaml": "services: {portal: {command: x, bogus: 1}}"})
    assert response.status_code == 422
    assert response.json()["error"]["problems"] == ["services.portal.bogus: unknown key"]
    time.sleep(0.5)
    assert {r["id"]: r["pid"] for r in running.replicas()} == before


def test_logs_show_what_replicas_print(running):
    port = running.replicas()[0]["port"]
    httpx.get(f"http://127.0.0.1:{port}/announcements?marker=xyzzy", trust_env=False)

    def logged() -> bool:
        return "xyzzy" in running.cli("logs", "portal", "--since", "1m", "--grep", "xyzzy").stdout

    running.wait("the access log line", logged, timeout_s=5, step_s=0.2)
    bad = running.cli("logs", "portal", "--since", "yesterday", check=False)
    assert bad.returncode == 1
    assert "--since 'yesterday'" in bad.stderr


def test_cli_without_portero_says_so_in_one_line(portero):
    portero.write_spec({"portal": portal_service()})
    out = portero.cli("status", check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: portero is not running at http://127.0.0.1:{portero.admin_port} (start it with `portero up`)"
    ]


def alive(pid: int) -> bool:
    """Zombies do not count: this sandbox's pid 1 may not reap the orphans of a SIGKILLed portero."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_follow_shows_a_new_line_within_a_second(running):
    port = running.replicas()[0]["port"]
    command = [sys.executable, "-m", "portero", "--admin", running.url.removesuffix("/scalability")]
    follower = subprocess.Popen(
        [*command, "logs", "portal", "-f", "--grep", "plover"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PORTERO_TOKEN": running.token},  # no --state-dir: the token comes from the environment
    )
    try:
        # A first line, however late it shows: the CLI has started (seconds on a busy machine) and is connected.
        httpx.get(f"http://127.0.0.1:{port}/announcements?plover=0", trust_env=False)
        assert "plover=0" in follower.stdout.readline()
        httpx.get(f"http://127.0.0.1:{port}/announcements?plover=1", trust_env=False)
        printed_at = time.monotonic()
        line = follower.stdout.readline()
        assert "plover=1" in line
        assert time.monotonic() - printed_at < 1.0
    finally:
        follower.terminate()
        follower.wait(5)


def test_sigterm_to_a_foreground_portero_stops_its_replicas_first(portero):
    portero.write_spec({"portal": portal_service(replicas=2)})
    command = [sys.executable, "-m", "portero", "--state-dir", str(portero.state), "up", "-f", str(portero.spec_file)]
    daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        pids = portero.group_pids() if portero.ready(2) else set()
        assert len(pids) >= 4  # shim + gunicorn master + worker, per replica
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        assert not [pid for pid in pids if alive(pid)]
        assert not (portero.state / "admin.json").exists()
        assert "Traceback" not in daemon.stderr.read()
    finally:
        daemon.kill()


def test_text_from_outside_is_printed_not_interpreted(running):
    """Sources, messages and log lines may hold Rich markup (`[/]`); the CLI prints them as they are."""
    spec = running.spec_file.read_text()
    applied = running.http.put(f"{running.url}/spec", json={"yaml": spec, "source": "[/]evil[bold]"})
    assert applied.status_code == 200
    out = running.cli("events", "--limit", "5")
    assert "[/]evil[bold]" in out.stdout
    assert "Traceback" not in out.stderr
