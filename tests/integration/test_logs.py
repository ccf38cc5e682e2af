"""`portero logs` against a real portero: lines come out as the replica wrote them, one line each, whatever they
hold; a terminal sees control characters written out; health checks stay out unless asked for; the shim keeps
up with an app that writes fast.
"""

from __future__ import annotations

import json
import os
import pty
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.portero_cli import ROOT, Portero
from tests.integration.test_dashboard import until

pytestmark = pytest.mark.integration
TINY = ROOT / "tests" / "fixtures" / "tiny_app.py"

FORGED = "2031-01-01T00:00:00.000Z portero forged by the app"
NEL = "nel-start\x85" + FORGED  # gunicorn logs a User-Agent holding \x85 just so
CR = "cr-start\rafter-cr"
ANSI = "ansi \x1b[2J\x1b[31mred\x1b[0m end"
JSON = json.dumps({"event": "long", "data": "x" * 300})  # 330 characters: wider than any terminal
SAID = [NEL, CR, ANSI, JSON]


@pytest.fixture
def noisy(portero: Portero) -> Portero:
    service = {
        "command": f"{sys.executable} {TINY}",
        "replicas": {"initial": 1, "min": 0, "max": 2},
        "health": {"interval_s": 0.5, "start_period_s": 10},
        "env": {"TINY_SAY": "\n".join(SAID)},
        "stop_grace_s": 2,
    }
    portero.write_spec({"tiny": service})
    portero.cli("up", "--detach")
    portero.ready(1)
    portero.wait("a few health checks", lambda: portero.get("/logs", health="true", grep="/health")["lines"][2:])
    return portero


def logs(portero: Portero, *args: str) -> str:
    """`portero logs` piped, read as bytes: a text-mode pipe would turn a "\\r" into a newline itself."""
    command = [sys.executable, "-m", "portero", "--state-dir", str(portero.state), "logs", *args]
    return subprocess.run(command, capture_output=True, check=True, timeout=60, cwd=portero.dir).stdout.decode()


def texts(output: str) -> list[str]:
    """What `portero logs` printed after each line's `<time> <replica> ` prefix."""
    return [line.split(" ", 2)[2] for line in output.split("\n") if line]


def test_piped_lines_come_out_as_written_one_line_each(noisy):
    lines = noisy.get("/logs", service="tiny")["lines"]
    assert [line["text"] for line in lines if line["stream"] == "stdout"][1:5] == SAID
    assert not any(line["text"].startswith("forged") or line["stream"] == "portero" for line in lines)

    printed = logs(noisy, "tiny", "-n", "1000")
    assert printed.count("\n") == len(lines)  # no wrapping, no line of the app's split in two
    assert texts(printed)[1:5] == SAID  # the ANSI escape and the "\r" too: piped, nothing is rewritten


def test_the_live_stream_splits_on_newlines_only(noisy):
    (replica,) = noisy.replicas()
    follower = subprocess.Popen(
        [sys.executable, "-m", "portero", "--state-dir", str(noisy.state), "logs", "tiny", "-f", "-n", "1"],
        stdout=subprocess.PIPE,
        cwd=noisy.dir,
        env={**os.environ, "COLUMNS": "80"},
    )
    try:
        seen = [follower.stdout.readline().decode()]  # its backlog: from here on it follows what is written
        with httpx.Client(trust_env=False, timeout=10, auth=noisy.auth) as client:
            stream = client.stream("GET", f"{noisy.url}/logs", params={"follow": "true", "service": "tiny", "limit": 1})
            with stream as response:
                chunks = response.iter_raw()
                raw = next(chunks)  # the backlog's line: this stream too follows from here on
                httpx.get(f"http://{replica['address']}/say", timeout=5)
                for chunk in chunks:
                    raw += chunk
                    if b"/say with 200" in raw:
                        break
        events = [json.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: ")]
        assert raw.isascii()  # no "\x85" or "\u2028" for a client's line splitter to trip on
        said = [e["text"] for e in events if e["stream"] == "stdout"]
        assert said[-5:-1] == SAID
        assert all(e["stream"] != "portero" for e in events)
        while not any("/say with 200" in line for line in seen):
            seen.append(follower.stdout.readline().decode())  # bytes: split on "\n" only
        assert texts("".join(seen))[-5:-1] == SAID
    finally:
        follower.kill()
        follower.wait()


def test_a_terminal_sees_control_characters_written_out(noisy):
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "portero", "--state-dir", str(noisy.state), "logs", "tiny", "-n", "1000"]
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(command, stdout=follower, stderr=follower, cwd=noisy.dir, env=env)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        shown += chunk
    process.wait(timeout=30)
    os.close(leader)
    text = shown.decode()
    assert "\x1b[2J" not in text  # the app's escape would have cleared the operator's screen
    assert "ansi \\x1b[2J\\x1b[31mred\\x1b[0m end" in text
    assert "cr-start\\rafter-cr" in text  # seen whole: nothing hidden behind a carriage return
    assert "\x85" not in text
    assert "nel-start\\x85" + FORGED in text
    assert JSON in text  # soft-wrapped: one line, whatever the width


def test_health_checks_stay_out_of_logs_unless_asked_for(noisy):
    default = logs(noisy, "tiny", "-n", "1000")
    assert "served /health" not in default
    assert "listening on" in default
    asked = logs(noisy, "tiny", "-n", "1000", "--health")
    checks = [line for line in asked.splitlines() if "served /health" in line]
    assert len(checks) >= 3
    assert all("portero-health/" in line for line in checks)


def test_the_shim_passes_short_lines_at_50_mb_per_second_of_its_cpu(tmp_path: Path):
    """40 MB of 40-byte lines (a busy access log). The shim's CPU time per megabyte is the measure (wall time
    on this shared 2-core machine says more about the neighbours): at most 20 ms a MB, i.e. 50 MB/s on one core.
    The old `logging` path took 800 ms a MB."""
    producer = tmp_path / "produce.py"
    producer.write_text(
        "import sys\n"
        "block = b''.join(b'GET /api/v1/items?id=%07d 200 0.003s\\n' % i for i in range(1000))\n"
        "for _ in range(1000):\n"
        "    sys.stdout.buffer.write(block)\n"
    )
    log = tmp_path / "replica.log"
    shim = [sys.executable, "-m", "portero.runtimes.shim", "--log", str(log), "--max-bytes", str(1 << 30)]
    shim += ["--exit-file", str(tmp_path / "exit.json"), "--", sys.executable, str(producer)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    subprocess.run(shim, check=True, timeout=120)
    wall_s = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # the shim and the producer
    with log.open("rb") as handle:
        lines = handle.read().split(b"\n")
    said = [line.split(b" ", 2)[2] for line in lines if b" stdout " in line]
    assert len(said) == 1_000_000
    assert said[0] == b"GET /api/v1/items?id=0000000 200 0.003s"
    assert said[-1] == b"GET /api/v1/items?id=0000999 200 0.003s"
    megabytes = 40.0
    assert cpu_s / megabytes < 0.020, f"{cpu_s:.2f} s of CPU for {megabytes:g} MB"
    assert megabytes / wall_s > 10, f"{megabytes / wall_s:.1f} MB/s"  # a loose floor: the old path made 1.2


def test_the_dashboard_shows_control_characters_written_out(noisy, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(f"{noisy.url}/dashboard")
    page.wait_for_selector("#login[open]", timeout=15_000)
    page.fill("#token", noisy.token)
    page.click("#login-submit")
    until(
        page,
        "the app's lines in the log stream",
        "() => document.querySelector('#logs').textContent.includes('cr-start')",
    )
    shown = page.locator("#logs").text_content()
    assert "cr-start\\rafter-cr" in shown
    assert "ansi \\x1b[2J\\x1b[31mred\\x1b[0m end" in shown
    assert "nel-start\\x85" + FORGED in shown
    assert not {"\r", "\x1b", "\x85"} & set(shown)
    assert "served /health" not in shown  # health checks stay out here too
    page.close()
