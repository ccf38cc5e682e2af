"""The router's resilience figures, measured on a machine of their own: the issue-15/16 integration tests run
long and with their strict p99 comparisons on, their printed figures kept in bench/results/resilience.md.

- Endpoints killed again and again under 50 keep-alive clients (static endpoints restarted by the test, and
  supervised replicas healed by portero): 30 s each (`make test` runs them for 12-15 s).
- The router's p99 alone and while the control plane reads 40 MB of logs and follows them, and while the admin
  port holds 20,000 half-sent requests: within 1.2x (+1 ms) of each other.
- The control plane killed with SIGKILL, a router restart and a killed worker, each under 50 keep-alive clients.

    .venv/bin/python bench/resilience.py
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/integration/router/test_faults.py::test_endpoints_killed_again_and_again_under_load_fail_no_request",
    "tests/integration/test_router_failover.py::test_replicas_killed_again_and_again_under_load_fail_no_request",
    "tests/integration/test_router_processes.py",
]
FIGURES = re.compile(
    r"^(kill loop.*|router p99 .*|control plane killed.*|router restarted.*|worker killed.*|after the switch.*"
    r"|5xx: .*|snapshots during.*)$"
)


def main() -> int:
    env = {**os.environ, "PORTERO_KILL_LOOP_S": "30", "PORTERO_STRICT_P99": "1", "PORTERO_LOAD_PAUSE_S": "0"}
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:xdist", *TESTS]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    # A figure's line may begin with the progress marks of the tests before it (`.`, or `F` after a failure).
    lines = [re.sub(r"^[.FEsx]+", "", line).split(" .")[0] for line in result.stdout.splitlines()]
    figures = [line for line in lines if FIGURES.match(line)]
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Resilience under load",
        "",
        f"{stamp}, `{' '.join(command[1:])}` with {env['PORTERO_KILL_LOOP_S']} s kill",
        "",
    ]
    out += [f"- {line}" for line in figures] + ["", f"pytest: {summary}", ""]
    (ROOT / "bench" / "results" / "resilience.md").write_text("\n".join(out))
    print("\n".join(out))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
