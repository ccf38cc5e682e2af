"""The first `make run` on a fresh machine: seconds from `make run` to a portal answering through the router.

A clean clone of this repository's committed HEAD (or `--ref`) in a temporary directory, with empty pip, uv and
XDG caches (fresh temporary directories), so that `make run` installs every pinned dependency from PyPI and
compiles the router as on a machine that never ran portero. `make run` runs in the background; the portal's `/` is
asked through the router every 0.2 s until it answers 200. Then `portero down` stops it and the directory goes.

Only the clone's `portero.yaml` differs from the repository's: the admin port (9900) and the router's (8000) are
swapped for free ones, because other porteros may hold those on a shared machine. Needs network to PyPI; takes
one to four minutes; not part of `make bench` (it measures the network and the compile, not portero).

    python3 bench/first_start.py [--ref COMMIT] [--timeout-s 600] [--keep]

Runs with the system's python3 (standard library only): there is no .venv before the first `make run`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, whatever the environment
MARKS = {".venv/.installed": "dependencies installed", ".venv/.compiled": "router compiled"}  # the Makefile's stamps
SERVED = "served"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        with DIRECT.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def clone(ref: str, into: Path) -> str:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(ROOT), str(into)], check=True)
    subprocess.run(["git", "-C", str(into), "checkout", "--quiet", "--detach", commit], check=True)
    return commit


def free_ports(spec: Path) -> tuple[int, int]:
    admin, router = free_port(), free_port()
    text = spec.read_text()
    if "  port: 9900\n" not in text or "\nrouter:" in text:
        raise SystemExit("portero.yaml changed: update free_ports() in bench/first_start.py")
    spec.write_text(text.replace("  port: 9900\n", f"  port: {admin}\n") + f"router:\n  port: {router}\n")
    return admin, router


def fresh_environment(caches: Path) -> dict[str, str]:
    """This environment without portero's, pip's and uv's settings, and with caches that hold nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTERO_", "VIRTUAL_ENV", "PIP_", "UV_"))}
    for name in ("PIP_CACHE_DIR", "UV_CACHE_DIR", "XDG_CACHE_HOME"):
        folder = caches / name.lower()
        folder.mkdir(parents=True)
        env[name] = str(folder)
    return env


def until_served(make: subprocess.Popen[bytes], work: Path, url: str, timeout_s: float) -> dict[str, float]:
    """Seconds from now to each step of `make run` seen (its stamp files), and to the portal's first 200."""
    began = time.monotonic()
    seen: dict[str, float] = {}
    while time.monotonic() - began < timeout_s and make.poll() is None:
        for mark in MARKS:
            if mark not in seen and (work / mark).exists():
                seen[mark] = time.monotonic() - began
        if answers(url):
            seen[SERVED] = time.monotonic() - began
            break
        time.sleep(0.2)
    return seen


def stop(make: subprocess.Popen[bytes], work: Path, env: dict[str, str]) -> None:
    if (work / ".venv/bin/portero").exists():
        down = [str(work / ".venv/bin/portero"), "down", "--file", "portero.yaml"]
        subprocess.run(down, cwd=work, env=env, capture_output=True, timeout=180, check=False)
    try:
        make.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGKILL)
        make.wait()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD", help="commit of this repository to clone (default HEAD)")
    parser.add_argument("--timeout-s", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="portero-first-start-"))
    work = scratch / "portero"
    commit = clone(args.ref, work)
    _, router = free_ports(work / "portero.yaml")
    env = fresh_environment(scratch / "cache")
    url = f"http://127.0.0.1:{router}/"
    print(f"load average at the start: {load()}")
    print(f"clone of {commit[:12]} in {work}; empty caches in {scratch / 'cache'}; `make run` -> {url}", flush=True)
    with (scratch / "make-run.log").open("wb") as log:
        make = subprocess.Popen(
            ["make", "run"],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            seen = until_served(make, work, url, args.timeout_s)
        finally:
            stop(make, work, env)

    for mark, what in MARKS.items():
        if mark in seen:
            print(f"  {what} after {seen[mark]:.0f} s")
    if SERVED in seen:
        print(f"first start: the portal answered 200 through the router {seen[SERVED]:.0f} s after `make run`")
    else:
        print(f"the portal did not answer within {args.timeout_s:.0f} s; the end of `make run`'s output:")
        print((scratch / "make-run.log").read_text(errors="replace")[-3000:])
    print(f"load average at the end: {load()}")
    if args.keep:
        print(f"kept: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if SERVED in seen else 1


if __name__ == "__main__":
    sys.exit(main())
