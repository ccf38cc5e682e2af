"""README's quick start, run as written: every command it shows, in its order, each output checked.

The demo runs from a copy of the repository's `portero.yaml` and `examples/portal` in a temporary directory, on
free ports (the README's 8000 and 9900 may be taken on a shared machine): the commands are the README's, with
those two numbers swapped for the free ones. `make run` is run as what its recipe runs (checked against the
Makefile), on a pseudo-terminal as an operator would. `make test` is the suite this test belongs to: it is the one
command not run here. A command added to the quick start without a check here fails the first test.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portero.runtimes.ports import free_port
from tests.conftest import require_tool
from tests.integration.portero_cli import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
README = ROOT / "README.md"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
CHECKED = {
    "make run",
    "make test",
    ".venv/bin/portero status",
    "curl -i http://127.0.0.1:<port>/",
    ".venv/bin/portero scale portal 5",
    ".venv/bin/portero logs portal -f --since 5m",
    ".venv/bin/portero events",
    ".venv/bin/portero deploy portal --version v2 --strategy blue-green",
    ".venv/bin/portero history portal",
    ".venv/bin/portero down",
    ".venv/bin/portero token create --role viewer",
    ".venv/bin/portero up --detach",
}


def quick_start() -> tuple[list[str], str]:
    """The commands of README's quick start (code blocks and inline), in order, and the section's text."""
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    section = section[: section.index("\n## ", 1)]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if command:
                commands.append(command)
    prose = re.sub(r"```sh\n.*?```", "", section, flags=re.S)
    commands += [c for c in re.findall(r"`([^`]+)`", prose) if c.startswith((".venv/bin/portero ", "make "))]
    return list(dict.fromkeys(commands)), section


def test_every_command_of_the_quick_start_is_run_here():
    commands, _ = quick_start()
    assert set(commands) == CHECKED, "README's quick start and this test disagree: run the new command here"
    recipe = (ROOT / "Makefile").read_text().split("\nrun: setup\n", 1)[1].splitlines()[0].strip()
    assert recipe == "$(BIN)/portero up --file portero.yaml"  # what the test runs for `make run`


class Terminal:
    """A command on a pseudo-terminal, its output read as it comes (ANSI codes taken out)."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        leader, follower = pty.openpty()
        self.process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, cwd=cwd, env=env)
        os.close(follower)
        self.leader = leader
        self.raw = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.raw += chunk

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def wait_for(self, what: str, pattern: str, timeout_s: float = 60) -> re.Match[str]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            found = re.search(pattern, self.text)
            if found:
                return found
            assert self.process.poll() is None, f"exited with {self.process.returncode}:\n{self.text[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n{self.text[-3000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)
        os.close(self.leader)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The quick start's directory: the demo spec on free ports, the portal beside it, the CLI as `.venv/bin`."""
    spec = yaml.safe_load((ROOT / "portero.yaml").read_text())
    admin, router = free_port(), free_port()
    spec["admin"]["port"] = admin
    spec.setdefault("router", {})["port"] = router
    (tmp_path / "portero.yaml").write_text(yaml.safe_dump(spec))
    shutil.copytree(
        ROOT / "examples" / "portal", tmp_path / "examples" / "portal", ignore=shutil.ignore_patterns("__pycache__")
    )
    portero = ROOT / ".venv" / "bin" / "portero"
    cli = [str(portero)] if portero.exists() else [sys.executable, "-m", "portero"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTERO_")}
    env |= {"COLUMNS": "200", "TERM": "xterm-256color"}
    yield {"dir": tmp_path, "admin": admin, "router": router, "cli": cli, "env": env}
    subprocess.run([*cli, "down"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    for proc in _shims(tmp_path):
        os.killpg(proc, signal.SIGKILL)


def _shims(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "portero.runtimes.shim" in command and str(directory) in command:
                found.append(int(entry.name))
    return found


def run(demo: dict[str, Any], command: str, timeout_s: float = 180) -> str:
    """A README command as typed, the README's ports swapped for the demo's."""
    argv = shlex.split(command.replace(":8000", f":{demo['router']}").replace(":9900", f":{demo['admin']}"))
    if argv[0] == ".venv/bin/portero":
        argv = [*demo["cli"], *argv[1:]]
    done = subprocess.run(argv, cwd=demo["dir"], env=demo["env"], capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_quick_start_as_written(demo):
    require_tool("curl", "the quick start shows a curl command")
    commands, section = quick_start()
    cli, where, env = demo["cli"], demo["dir"], demo["env"]
    portal = f"http://127.0.0.1:{demo['router']}/"
    assert "http://127.0.0.1:8000/" in section  # the README's URLs, answered below on the demo's ports
    assert "http://127.0.0.1:9900/scalability/dashboard" in section

    # make run: the live table in the foreground, the admin token shown once (a terminal), the portal serving.
    foreground = Terminal([*cli, "up", "--file", "portero.yaml"], where, env)
    try:
        shown = foreground.wait_for("the admin token", r"Created the admin token \w+ of this portero.*?\n\s*(prt_\S+)")
        token = (where / ".portero" / "admin.token").read_text().strip()
        assert shown[1] == token
        foreground.wait_for("3 ready replicas in the live table", r"portal \(3/3 ready\)", timeout_s=90)
        foreground.wait_for("CPU and memory in the live table", r"\d+\.\d%\W+\d+\.\d MiB", timeout_s=30)
        assert httpx.get(portal, timeout=10, trust_env=False).status_code == 200

        status = run(demo, ".venv/bin/portero status")
        assert "portal (3/3 ready)" in status
        assert len(re.findall(r" ready .*?\d+\.\d%\W+\d+\.\d MiB", status)) == 3, status

        port = re.search(r"127\.0\.0\.1:(\d+)", status)[1]
        answer = run(demo, f"curl -i http://127.0.0.1:{port}/")
        assert answer.startswith("HTTP/1.1 200")

        scaled = run(demo, ".venv/bin/portero scale portal 5")
        assert scaled.startswith("portal: scaling to 5 replica(s)")
        foreground.wait_for("5 ready replicas in the live table", r"portal \(5/5 ready\)", timeout_s=90)

        follow = [*cli, "logs", "portal", "-f", "--since", "5m"]
        follower = subprocess.Popen(follow, cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        httpx.get(portal + "?from-the-readme-test", timeout=10, trust_env=False)
        lines = []
        end = time.monotonic() + 20
        while time.monotonic() < end and not any(b"from-the-readme-test" in line for line in lines):
            lines.append(follower.stdout.readline())
        follower.send_signal(signal.SIGINT)  # Ctrl-C
        _, errors = follower.communicate(timeout=30)
        assert any(b"from-the-readme-test" in line for line in lines), lines[-5:]
        assert all(re.match(rb"\S+ portal-\d+-\w+ ", line) for line in lines if line)
        assert not any(b"portero-health/" in line for line in lines)  # health checks stay out
        assert b"Traceback" not in errors

        events = run(demo, ".venv/bin/portero events")
        assert "service.scaled" in events
        assert "scaled from 3 to 5" in events

        deployed = run(demo, ".venv/bin/portero deploy portal --version v2 --strategy blue-green")
        assert re.search(r"deployment \S+: revision 1 -> 2 \(blue-green\)", deployed)

        history = run(demo, ".venv/bin/portero history portal")
        assert re.search(r"│ 2 +│ v2 ", history)
        assert "succeeded" in history

        dashboard = httpx.get(f"http://127.0.0.1:{demo['admin']}/scalability/dashboard", timeout=10, trust_env=False)
        assert dashboard.status_code == 200
        assert dashboard.headers["content-type"].startswith("text/html")

        down = run(demo, ".venv/bin/portero down").strip().splitlines()
        assert re.fullmatch(
            r"stopping portero: up to \d+ s \(the router's workers, then each replica's grace\)", down[0]
        )
        assert re.fullmatch(r"portero stopped: stopped \d+ replica\(s\); no replica left running", down[-1])
        assert foreground.process.wait(timeout=30) == 0
    finally:
        foreground.close()
    assert _shims(where) == []

    viewer = run(demo, ".venv/bin/portero token create --role viewer")
    assert re.fullmatch(r"prt_\S+\n", viewer)

    detached = run(demo, ".venv/bin/portero up --detach")
    assert "portal (5/5 ready)" in detached  # the count it was scaled to survives a restart
    assert "portero running in the background" in detached
    run(demo, ".venv/bin/portero down")

    # Ctrl-C in `make run` stops every replica and portero.
    foreground = Terminal([*cli, "up", "--file", "portero.yaml"], where, env)
    try:
        foreground.wait_for("the replicas ready", r"portal \(5/5 ready\)", timeout_s=90)
        foreground.process.send_signal(signal.SIGINT)  # what Ctrl-C sends it
        assert foreground.process.wait(timeout=60) == 0
    finally:
        foreground.close()
    assert _shims(where) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(portal, timeout=5, trust_env=False)
    assert commands  # every one of them was run above, but `make test` (this suite)
