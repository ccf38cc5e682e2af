"""What a replica can reach, end to end: portero's environment, its state directory, the processes it leaves.

A real portero through its CLI, as root (CI's user): replicas find no secret of portero's in their environment,
one run with `user:` cannot read the state directory, a loose state directory is made private, what a stop had
to kill is reported, and a revoked token's log stream ends within a second.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from portero import tokens
from tests.conftest import REQUIRE_ALL
from tests.integration.portero_cli import Portero

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures"
TINY = FIXTURES / "tiny_app.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # another user cannot reach the venv's Python under /root

# Run as `nobody`: what of the state directory can it reach? Then serve /health.
PROBE = """
import os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
state = sys.argv[1]
for what, read in [
    ("list", lambda: os.listdir(state)),
    ("admin.token", lambda: open(os.path.join(state, "admin.token")).read()),
    ("state.db", lambda: open(os.path.join(state, "state.db"), "rb").read(1)),
]:
    try:
        read()
        print(f"probe {what}: readable", flush=True)
    except OSError as exc:
        print(f"probe {what}: {type(exc).__name__}", flush=True)
print(f"probe uid {os.getuid()} gid {os.getgid()} home {os.environ.get('HOME')}", flush=True)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def needs_root() -> None:
    if os.geteuid() != 0:
        message = "runs replicas as another user: needs root (CI runs as root)"
        pytest.fail(message) if REQUIRE_ALL else pytest.skip(message)


def tiny(**extra: object) -> dict[str, object]:
    return {
        "command": [sys.executable, str(TINY)],
        "health": {"interval_s": 1},
        "replicas": {"initial": 1, "min": 0, "max": 3},
        "stop_grace_s": 5,
        **extra,
    }


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def app_pid(portero: Portero, replica_id: str) -> int:
    pid: int = portero.get(f"/containers/{replica_id}/stats")["app_pid"]
    return pid


def lines(portero: Portero, service: str) -> list[str]:
    return [line["text"] for line in portero.get("/logs", service=service, limit=1000)["lines"]]


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A directory every user may pass through (pytest's tmp_path sits in a 0700 one): only the state
    directory's own mode keeps another user out."""
    base = Path(tempfile.mkdtemp(prefix="portero-isolation-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_a_replica_finds_neither_the_admin_token_nor_a_cloud_secret_of_portero(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    tokens.ensure_admin(state)
    admin = (state / "admin.token").read_text().strip()
    secrets = {"PORTERO_TOKEN": admin, "AWS_SECRET_ACCESS_KEY": "fake-cloud-secret", "LANG": "C.UTF-8"}
    portero = Portero(tmp_path, env=secrets)  # portero itself runs with these in its environment
    try:
        portero.write_spec({"web": tiny(env={"GIVEN": "by the spec"})})
        portero.cli("up", "--detach")
        replica = portero.ready(1)[0]
        daemon_env = environ_of(portero.pid())
        assert daemon_env["PORTERO_TOKEN"] == admin  # the premise: portero has them
        assert daemon_env["AWS_SECRET_ACCESS_KEY"] == "fake-cloud-secret"
        env = environ_of(app_pid(portero, replica["id"]))
        assert "PORTERO_TOKEN" not in env
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert not [value for value in env.values() if admin in value or "fake-cloud-secret" in value]
        assert env["LANG"] == "C.UTF-8"  # one of the few documented ones
        assert env["GIVEN"] == "by the spec"
        assert env["PORTERO_REPLICA_ID"] == replica["id"]
        assert env["PORT"] == str(replica["port"])
        status = Path(f"/proc/{app_pid(portero, replica['id'])}/status").read_text()
        umask = os.umask(0)
        os.umask(umask)
        assert f"Umask:\t{umask:04o}" in status  # the umask portero was started with, not its private 077
    finally:
        portero.stop()


def test_a_loose_state_directory_is_made_owner_only_and_root_replicas_are_warned_about(portero):
    portero.state.mkdir(mode=0o755)  # `mkdir -m755 s; portero --state-dir s up`
    portero.state.chmod(0o755)
    (portero.state / "portal-data").mkdir(mode=0o755)
    (portero.state / "portal-data").chmod(0o755)
    portero.write_spec({"plain": tiny()})
    up = portero.cli("up", "--detach")
    assert f"warning: readable by other users: {portero.state} was 0755, now owner-only" in up.stderr
    assert f"{portero.state / 'portal-data'} was 0755" in up.stderr
    portero.ready(1)
    portero.cli("token", "create", "--name", "later")  # files made later are private too
    loose = []
    for folder, dirs, files in os.walk(portero.state):  # state.db, its journal, the replicas' logs included
        for name in [".", *dirs, *files]:
            path = Path(folder, name)
            if not path.is_symlink() and stat.S_IMODE(path.lstat().st_mode) & 0o077:
                loose.append(f"{path} {stat.S_IMODE(path.lstat().st_mode):04o}")
    assert not loose
    assert (portero.state / "state.db").exists()
    assert list(portero.state.glob("replicas/*/replica.log"))
    if os.geteuid() == 0:  # said once at start, and by every `portero status`
        assert "warning: replicas of plain run as root" in up.stderr
        log = (portero.state / "portero.log").read_text()
        assert log.count("replicas of plain run as root, as portero does") == 1
        assert "warning: replicas of plain run as root" in portero.cli("status").stderr
        assert portero.get("/services")["services"][0]["user"] == "root"


def test_a_replica_run_as_another_user_cannot_read_the_state_directory(open_base):
    needs_root()
    portero = Portero(open_base)
    portero.state.mkdir(mode=0o755)  # loose beforehand: only portero's fix keeps `nobody` out
    portero.state.chmod(0o755)
    (open_base / "probe.py").write_text(PROBE)
    probe = {"command": [SYSTEM_PYTHON, str(open_base / "probe.py"), str(portero.state)], "health": {"path": "/"}}
    try:
        portero.write_spec({"web": {**probe, "user": "nobody"}, "plain": tiny()})
        portero.cli("up", "--detach")
        replicas = {r["service"]: r for r in portero.ready(2)}
        found = portero.wait("the probe's report", lambda: [t for t in lines(portero, "web") if "probe uid" in t])
        assert found == ["probe uid 65534 gid 65534 home /nonexistent"]
        assert sorted(t for t in lines(portero, "web") if t.startswith("probe ") and "uid" not in t) == [
            "probe admin.token: PermissionError",
            "probe list: PermissionError",
            "probe state.db: PermissionError",
        ]
        assert psutil.Process(app_pid(portero, replicas["web"]["id"])).uids().real == 65534
        assert psutil.Process(app_pid(portero, replicas["plain"]["id"])).uids().real == 0
        status = portero.cli("status").stderr
        assert "warning: replicas of plain run as root" in status  # `web` is not named: it has a user
        services = {s["name"]: s for s in portero.get("/services")["services"]}
        assert (services["web"]["user"], services["plain"]["user"]) == ("nobody", "root")
    finally:
        portero.stop()


def test_down_and_scale_down_report_the_processes_they_had_to_kill(portero):
    app = {**tiny(), "command": [sys.executable, str(FIXTURES / "daemonizing_app.py")], "health": {"path": "/"}}
    portero.write_spec({"web": {**app, "replicas": {"initial": 2, "min": 0, "max": 3}}})
    portero.cli("up", "--detach")
    portero.ready(2)

    def daemons() -> list[int]:
        return [int(t.split()[1]) for t in lines(portero, "web") if t.startswith("daemon ")]

    portero.wait("both daemons", lambda: len(daemons()) == 2)
    first, second = daemons()
    portero.cli("scale", "web", "1")
    removed = portero.wait(
        "the scale-down", lambda: [e for e in portero.events(service="web") if e["kind"] == "replica.removed"]
    )
    assert "had to kill 1 process(es): " in removed[0]["message"]
    gone = first if f": {first} " in removed[0]["message"] else second
    kept = second if gone == first else first
    assert not psutil.pid_exists(gone) or psutil.Process(gone).status() == psutil.STATUS_ZOMBIE

    down = portero.cli("down").stdout
    assert "portero stopped: stopped 1 replica(s); had to kill 1 process(es): web-" in down
    assert f": {kept} " in down
    assert not psutil.pid_exists(kept)


def test_a_revoked_tokens_log_stream_ends_within_a_second(portero):
    portero.write_spec({"web": tiny()})
    portero.cli("up", "--detach")
    portero.ready(1)
    viewer = portero.cli("token", "create", "--name", "wall").stdout.strip()
    viewer_id = next(t.id for t in tokens.listed(portero.state) if t.name == "wall")
    headers = {"Authorization": f"Bearer {viewer}"}
    timeout = httpx.Timeout(10, read=3)  # a stream that never ends fails the test instead of hanging it
    with httpx.stream(
        "GET", portero.url + "/logs", params={"follow": "true"}, headers=headers, timeout=timeout, trust_env=False
    ) as response:
        assert response.status_code == 200
        received = response.iter_lines()
        assert next(line for line in received if line.startswith("data: "))  # the backlog: it streams
        tokens.revoke(portero.state, viewer_id)  # what `portero token revoke` does, timed from here
        revoked_at = time.monotonic()
        rest = []
        for line in received:  # health checks print a line a second: a stream left open never goes quiet
            rest.append(line)
            if time.monotonic() - revoked_at > 3:
                break
        ended_after = time.monotonic() - revoked_at
    print(f"stream ended {ended_after:.3f} s after the revoke")
    assert ended_after < 1.0
    assert rest[-3:] == [
        "event: error",
        f'data: {{"error": {{"status": 401, "message": "token {viewer_id} was revoked", "problems": []}}}}',
        "",
    ]


def test_validate_refuses_huge_numbers_and_files_in_one_line(portero):
    portero.spec_file.write_text(f"services: {{web: {{command: run, stop_grace_s: {'9' * 4400}}}}}\n")
    refused = portero.cli("validate", check=False)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: {portero.spec_file}: services.web.stop_grace_s: Input should be less than or equal to 86400 "
        "(got a number of 4400 characters)"
    ]
    with portero.spec_file.open("w") as handle:
        handle.write("services: {web: {command: run}}\n# " + "x" * (50 << 20) + "\n")
    started = time.monotonic()
    refused = portero.cli("validate", check=False)
    assert time.monotonic() - started < 5  # it ran 252 s into a MemoryError
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: {portero.spec_file}: the spec is over 1,000,000 bytes, the limit (a spec is usually a few KiB)"
    )


def test_portero_logs_follow_says_why_its_stream_ended(portero):
    portero.write_spec({"web": tiny()})
    portero.cli("up", "--detach")
    portero.ready(1)
    viewer = portero.cli("token", "create", "--name", "tail").stdout.strip()
    viewer_id = next(t.id for t in tokens.listed(portero.state) if t.name == "tail")
    command = [sys.executable, "-m", "portero", "--state-dir", str(portero.state), "logs", "-f"]
    env = {**os.environ, "PORTERO_TOKEN": viewer, "PORTERO_ADMIN": portero.url.removesuffix("/scalability")}
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as following:
        assert following.stdout is not None
        assert "web-" in following.stdout.readline()  # following
        tokens.revoke(portero.state, viewer_id)
        _, err = following.communicate(timeout=10)
    assert following.returncode == 1
    assert err.strip() == f"error: token {viewer_id} was revoked"
