"""`portero down` waits as long as the longest stop ladder, and says what still stops (#19 case 15).

Before, it gave up after a fixed 60 s ("did not stop") while replicas with `stop_grace_s: 90` were still
stopping, and then stopped.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.integration.portero_cli import Portero

pytestmark = pytest.mark.integration
TINY = Path(__file__).parents[1] / "fixtures" / "tiny_app.py"
STOP_S = 63  # past the 60 s the CLI used to wait


def test_down_waits_out_a_stop_grace_longer_than_a_minute_and_says_what_still_stops(portero: Portero):
    slow = {
        "command": [sys.executable, str(TINY)],
        "env": {"TINY_STOP_S": str(STOP_S)},
        "health": {"interval_s": 1},
        "replicas": {"initial": 2, "min": 0, "max": 2},
        "stop_grace_s": 90,
    }
    portero.write_spec({"slow": slow})
    portero.cli("up", "--detach")
    replicas = portero.ready(2)
    began = time.monotonic()
    down = portero.cli("down", timeout=200)
    took = time.monotonic() - began
    assert took >= STOP_S, took
    said = down.stdout
    assert "stopping portero: up to " in said
    budget = float(said.split("stopping portero: up to ", 1)[1].split(" s", 1)[0])
    assert budget >= 90 + 10  # the replicas' grace and the router workers'
    progress = [line for line in said.splitlines() if "2 replica(s) stopping: " in line]
    assert len(progress) >= STOP_S // 15, said  # what still stops, every 15 s while it does
    assert "portero stopped: stopped 2 replica(s); no replica left running" in said, said
    assert "had to kill" not in said  # they ended on their own, within their grace
    for replica in replicas:
        with pytest.raises(ProcessLookupError):
            os.kill(replica["pid"], 0)
