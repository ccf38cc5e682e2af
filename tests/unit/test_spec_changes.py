"""What `apply` says a spec changed: lists of items (rules, webhooks, endpoints) item by item (issue 19, case 2);
and why the process runtime cannot run a command (case 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from portero.runtimes.process import cannot_run
from portero.spec.changes import changes, effect
from portero.spec.loader import parse_spec


def said(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{c.text()}: {effect(c)}" for c in changes(parse_spec(json.dumps(old)), parse_spec(json.dumps(new)))]


def spec(rules: list[dict[str, Any]], webhooks: list[dict[str, Any]], endpoints: list[str]) -> dict[str, Any]:
    service = {"endpoints": [{"address": a} for a in endpoints]} if endpoints else {"command": "gunicorn main:app"}
    return {"services": {"portal": service}, "alerts": {"rules": rules, "webhooks": webhooks}}


def test_rules_by_name_webhooks_by_position_and_an_endpoint_added_starts_no_replica():
    rule = {"name": "slow", "metric": "service_p95_seconds", "threshold": 1}
    other = {"name": "busy", "metric": "replica_cpu_percent", "threshold": 90}
    hook = {"url": "http://127.0.0.1:1/a"}
    before = spec([rule, other], [hook], ["127.0.0.1:9001"])
    after = spec(
        [other, {**rule, "threshold": 2}], [hook, {"url": "http://127.0.0.1:1/b"}], ["127.0.0.1:9001", "127.0.0.1:9002"]
    )
    how = "from the monitor's next pass (rules and receivers)"
    assert said(before, after) == [
        f"alerts.rules[slow].threshold: 1.0 -> 2.0: {how}",  # the order of named rules is no change
        f"alerts.webhooks[2]: added: {how}",
        "services.portal.endpoints[2]: added: every router worker routes by it now",
    ]
    assert said(after, before)[1] == f"alerts.webhooks[2]: removed: {how}"


def test_a_command_is_looked_up_as_exec_would_and_a_file_without_x_is_named(tmp_path: Path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert cannot_run("./run.sh", "/usr/bin", tmp_path) == (
        f"not executable: './run.sh' ({script}, mode 0644; chmod +x it or name its interpreter)"
    )
    assert cannot_run("run.sh", str(tmp_path), Path("/")) is not None  # on PATH but not executable: named too
    script.chmod(0o755)
    assert cannot_run("./run.sh", "/usr/bin", tmp_path) is None  # from the workdir, not portero's directory
    assert cannot_run(str(script), "/usr/bin", Path("/")) is None
    assert cannot_run("sh", "/usr/bin:/bin", tmp_path) is None
    assert (
        cannot_run("./missing", "/usr/bin", tmp_path)
        == f"command not found: './missing' (no such file: {tmp_path}/missing)"
    )
    assert (
        cannot_run("no-such-command-xyz", "/usr/bin", tmp_path)
        == "command not found: 'no-such-command-xyz' (PATH=/usr/bin)"
    )
