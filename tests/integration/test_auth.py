"""Auth end to end: the first start's admin token, `portero token`, and a running daemon that follows the file."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import stat
import subprocess
import sys
from typing import Any

import httpx
import psutil

from tests.integration.portero_cli import Portero


def start(portero: Portero) -> str:
    tiny = {
        "command": [sys.executable, "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"],
        "health": {"path": "/", "interval_s": 1},
        "replicas": {"initial": 1, "min": 0, "max": 2},
    }
    portero.write_spec({"web": tiny})
    return portero.cli("up", "--detach").stdout


def call(portero: Portero, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, portero.url + path, headers=headers, trust_env=False, timeout=10, **kwargs)


def on_a_terminal(portero: Portero, *args: str) -> str:
    """Run the CLI with a pseudo-terminal as stdout, as an operator at a shell would."""
    master, slave = pty.openpty()
    command = [sys.executable, "-m", "portero", "--state-dir", str(portero.state), *args]
    try:
        done = subprocess.run(command, stdout=slave, stderr=subprocess.PIPE, text=True, timeout=90, cwd=portero.dir)
    finally:
        os.close(slave)
    assert done.returncode == 0, done.stderr
    out = b""
    with contextlib.suppress(OSError):  # EIO once everything written is read
        while chunk := os.read(master, 65536):
            out += chunk
    os.close(master)
    return out.decode(errors="replace")


def test_first_start_shows_the_admin_token_once_on_a_terminal_and_keeps_it_0600(portero: Portero) -> None:
    tiny = {
        "command": [sys.executable, "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"],
        "health": {"path": "/", "interval_s": 1},
    }
    portero.write_spec({"web": tiny})
    first = on_a_terminal(portero, "up", "--detach", "--file", str(portero.spec_file))
    token = portero.token
    assert token.startswith("prt_")
    assert token in first
    for name in ("admin.token", "tokens.json"):
        assert stat.S_IMODE((portero.state / name).stat().st_mode) == 0o600
    assert token not in (portero.state / "tokens.json").read_text()
    portero.cli("down")
    again = on_a_terminal(portero, "up", "--detach", "--file", str(portero.spec_file))
    assert "admin token" not in again  # the second start makes no new token and shows none
    assert portero.token == token
    portero.cli("status")  # the CLI sends it by itself
    assert call(portero, "GET", "/health", None).status_code == 200
    assert call(portero, "GET", "/services", None).status_code == 401
    assert "prt_" not in (portero.state / "portero.log").read_text()


def test_token_commands_and_a_daemon_that_follows_them(portero: Portero) -> None:
    first = start(portero)
    assert "prt_" not in first  # stdout is no terminal here: it could be a log
    assert "Created the admin token" in first
    portero.ready(1)
    created = portero.cli("token", "create", "--role", "viewer", "--name", "grafana")
    viewer = created.stdout.strip()
    assert viewer.startswith("prt_")
    assert created.stdout.count("\n") == 1  # the token alone on stdout: `TOKEN=$(portero token create)`
    assert "created viewer token" in created.stderr

    listed = json.loads(portero.cli("token", "list", "--json").stdout)
    assert [(t["role"], t["name"]) for t in listed] == [("admin", "initial-admin"), ("viewer", "grafana")]
    assert all("sha256" not in t and not any(str(v).startswith("prt_") for v in t.values()) for t in listed)
    table = portero.cli("token", "list").stdout
    assert "grafana" in table
    assert "prt_" not in table

    assert call(portero, "GET", "/services", viewer).status_code == 200
    refused = call(portero, "POST", "/services/web/scale", viewer, json={"replicas": 2})
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].endswith("POST needs admin")

    viewer_id = next(t["id"] for t in listed if t["role"] == "viewer")
    assert f"revoked viewer token {viewer_id} (grafana)" in portero.cli("token", "revoke", viewer_id).stdout
    revoked = call(portero, "GET", "/services", viewer)  # at once: the daemon re-reads the changed file
    assert revoked.status_code == 401
    assert revoked.headers["www-authenticate"] == 'Bearer realm="portero", error="invalid_token"'

    missing = portero.cli("token", "revoke", "ffffffff", check=False)
    assert missing.returncode == 1
    assert "no token with id 'ffffffff'" in missing.stderr

    # An admin token made by the command works for the CLI through PORTERO_TOKEN.
    admin = portero.cli("token", "create", "--role", "admin", "--name", "ci").stdout.strip()
    env = {**os.environ, "PORTERO_TOKEN": admin}
    command = [sys.executable, "-m", "portero", "--admin", portero.url.removesuffix("/scalability")]
    scaled = subprocess.run([*command, "scale", "web", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert scaled.returncode == 0, scaled.stderr
    wrong = subprocess.run(
        [*command, "status"], env={**env, "PORTERO_TOKEN": "prt_wrong"}, capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 1
    assert "unknown or revoked token" in wrong.stderr
    assert "PORTERO_TOKEN" in wrong.stderr  # says where the CLI took its token from

    log = (portero.state / "portero.log").read_text()
    assert "prt_" not in log
    assert "POST '/scalability/services/web/scale' by token" in log  # the audit line: id and name, no secret


def unknown_token_up(portero: Portero) -> subprocess.CompletedProcess[str]:
    tiny = {
        "command": [sys.executable, "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"],
        "health": {"path": "/", "interval_s": 1},
    }
    portero.write_spec({"web": tiny})
    portero.env["PORTERO_TOKEN"] = "prt_" + "x" * 43  # a token of some other portero
    return portero.cli("up", "--detach", check=False)


def nothing_runs(portero: Portero) -> None:
    assert not _answers(portero)
    assert not (portero.state / "admin.json").exists()
    shims = [p for p in _processes() if "portero.runtimes.shim" in p and str(portero.state) in p]
    assert shims == []
    daemons = [p for p in _processes() if " up " in p and str(portero.state) in p]
    assert daemons == []


def _answers(portero: Portero) -> bool:
    try:
        httpx.get(portero.url + "/health", timeout=1, trust_env=False)
    except httpx.HTTPError:
        return False
    return True


def _processes() -> list[str]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            found.append(" ".join(process.cmdline()))
    return found


def test_up_detach_with_a_token_of_another_portero_says_so_in_one_line_and_starts_nothing(portero: Portero) -> None:
    refused = unknown_token_up(portero)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error: PORTERO_TOKEN is not a token of this portero")
    assert "nothing was started" in refused.stderr
    nothing_runs(portero)


def test_up_detach_with_redis_stops_the_daemon_the_token_cannot_drive(portero: Portero, redis_server: Any) -> None:
    portero.env["REDIS_URL"] = redis_server.url  # another portero's token could be good here: it is tried
    refused = unknown_token_up(portero)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error: PORTERO_TOKEN was refused (unknown or revoked token")
    assert refused.stderr.rstrip().endswith("portero was stopped again")
    nothing_runs(portero)
