"""What `apply`, `deploy`, `up` and `scale` tell the operator is what happened (issue 19, cases 2, 3, 7, 13): real
portero, real replicas of the portal, the real router."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from portero.runtimes.ports import free_port
from tests.integration.portero_cli import PORTAL, Portero, portal_service
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration
ROLLING = {"strategy": "rolling", "progress_deadline_s": 60, "analysis": {"p95_floor_s": 5}}


def out(result) -> str:  # type: ignore[no-untyped-def]
    return str(result.stdout + result.stderr)


@pytest.fixture
def portero(tmp_path):
    instance = Portero(tmp_path)
    yield instance
    instance.stop()


def test_a_wrong_workdir_is_explained_and_its_fix_rolls_out_then_a_command_not_found_fails_at_once(portero):
    # Case 13: `up --detach` with a workdir that does not exist says why, at once (main waited 60 s and said
    # "replicas were not all ready"); the corrected spec, applied, replaces both crash-looping replicas (main:
    # one new replica, the old ones left in backoff, "running" for minutes).
    missing = Path(portero.dir) / "no-such-dir"
    portero.write_spec({"portal": portal_service(replicas=2, workdir=str(missing))}, deploy=ROLLING)
    began = time.monotonic()
    up = portero.cli("up", "--detach", check=False)
    assert up.returncode == 1, out(up)
    assert time.monotonic() - began < 30
    assert "replicas cannot start" in out(up)
    assert f"workdir does not exist: {missing}" in out(up)
    portero.write_spec({"portal": portal_service(replicas=2)}, deploy=ROLLING)
    began = time.monotonic()
    fixed = portero.cli("apply", timeout=60)
    print(fixed.stdout)
    said = " ".join(fixed.stdout.split())  # a long line wraps at the terminal's width
    assert f"services.portal.workdir: {str(missing)[:57]}... -> {PORTAL}: revision 2, deployment" in said
    assert "old replicas 2 -> 0, new 1 -> 2" in said  # both old replicas were down already: both go at once
    assert time.monotonic() - began < 30
    assert {(r["revision"], r["state"]) for r in portero.ready(2)} == {(2, "ready")}
    # Case 3: a command that does not exist ends its deployment at once with the reason, and `apply` exits 1
    # (main: exit 0, "deployment started", then 120 s of crash-looping).
    portero.write_spec({"portal": portal_service(replicas=2, command="no-such-command-xyz")}, deploy=ROLLING)
    began = time.monotonic()
    broken = portero.cli("apply", check=False, timeout=60)
    print(out(broken))
    assert broken.returncode == 1
    assert time.monotonic() - began < 15
    said = " ".join(out(broken).split())
    assert "rolled back: revision 3 cannot start" in said
    assert "command not found: 'no-such-command-xyz'" in said
    assert {(r["revision"], r["state"]) for r in portero.ready(2)} == {(2, "ready")}


RUN = """#!/bin/sh
# the portal, started from a script in a workdir of its own; BREAK=1 execs a script that is not executable
[ -n "$BREAK" ] && exec ./not-executable.sh
[ -n "$DELAY_S" ] && sleep "$DELAY_S"  # a revision slow to get ready
cd "$PORTAL_DIR" && exec gunicorn -c gunicorn.conf.py --bind "127.0.0.1:$PORT" main:app
"""


@pytest.mark.timeout(300)  # four deployments, one of them slow on purpose, on a machine that may be loaded
def test_deploy_follows_its_deployment_to_its_end_and_a_script_that_is_not_executable_fails_at_once(portero):
    # Case 3: `deploy` exits as its deployment ends (0 served, 1 rolled back), `--detach` returns at once; a
    # command that exists but cannot be executed ends the deployment at once with that reason (main: "command not
    # found", and a command relative to its workdir, `./run.sh`, was looked up in portero's own directory).
    app = Path(portero.dir) / "app"
    app.mkdir()
    (app / "run.sh").write_text(RUN)
    (app / "run.sh").chmod(0o755)
    (app / "not-executable.sh").write_text("#!/bin/sh\necho never\n")
    (app / "not-executable.sh").chmod(0o644)
    env = {"WEB_CONCURRENCY": "1", "PORTAL_DIR": str(PORTAL)}
    service = portal_service(replicas=2, workdir=str(app), command="./run.sh", env=env)
    portero.write_spec({"portal": service}, deploy=ROLLING)
    portero.cli("up", "--detach")
    portero.ready(2)

    served = portero.cli("deploy", "portal", "--version", "v2", check=False, timeout=120)
    print(out(served))
    assert served.returncode == 0, out(served)
    said = " ".join(served.stdout.split())
    assert "revision 1 -> 2 (rolling)" in said
    assert "revision 2 serves" in said  # followed to its end
    assert {r["revision"] for r in portero.ready(2)} == {2}

    # Its new replicas take 15 s to get ready: `--detach` returns while it runs (the CLI's own start on a loaded
    # machine may take seconds, so no clock is asked here).
    detached = portero.cli("deploy", "portal", "--version", "v3", "--set", "DELAY_S=15", "--detach")
    assert "revision 2 -> 3 (rolling)" in detached.stdout
    deployment = detached.stdout.split()[1].rstrip(":")
    assert portero.get(f"/deployments/{deployment}")["state"] == "running", out(detached)
    assert "serves" not in detached.stdout
    portero.wait(
        "the detached deployment to succeed",
        lambda: portero.get(f"/deployments/{deployment}")["state"] == "succeeded",
        timeout_s=120,
        step_s=0.5,
    )

    began = time.monotonic()
    broken = portero.cli("deploy", "portal", "--version", "v4", "--set", "BREAK=1", check=False, timeout=120)
    print(out(broken))
    assert broken.returncode == 1, out(broken)
    assert time.monotonic() - began < 30  # far from the 60-s progress deadline, with room for a loaded machine
    said = " ".join(out(broken).split())
    assert "rolled back: revision 4 cannot start" in said
    assert "code 126" in said  # the shell's exec said so
    assert "(not executable)" in said
    assert {(r["revision"], r["state"]) for r in portero.ready(2)} == {(3, "ready")}

    portero.write_spec({"portal": {**service, "command": "./not-executable.sh"}}, deploy=ROLLING)
    began = time.monotonic()
    refused = portero.cli("apply", check=False, timeout=60)
    print(out(refused))
    assert refused.returncode == 1, out(refused)
    assert time.monotonic() - began < 30
    said = " ".join(out(refused).split())
    assert "rolled back: revision 5 cannot start" in said
    assert f"not executable: './not-executable.sh' ({app / 'not-executable.sh'}, mode 0644" in said
    assert {(r["revision"], r["state"]) for r in portero.ready(2)} == {(3, "ready")}


def up_under_the_autoscaler(portero: Portero) -> tuple[dict[str, Any], dict[str, Any]]:
    """2 portal replicas (1..4) with the autoscaler on, idle: it keeps them at 2 for minutes. The service and
    the autoscale section, to change and apply again."""
    service = portal_service(replicas=2)
    service["replicas"] = {"initial": 2, "min": 1, "max": 4}
    autoscale = {"enabled": True, "scale_up_threshold": 90, "scale_down_threshold": 1}
    portero.write_spec({"portal": service}, autoscale=autoscale)
    portero.cli("up", "--detach")
    portero.ready(2)
    return service, autoscale


def test_apply_lists_each_changed_field_and_how_it_took_effect_and_scale_is_refused_under_the_autoscaler(portero):
    service, autoscale = up_under_the_autoscaler(portero)
    # Case 7: a manual scale would be undone by the autoscaler's next pass: refused, with what to do instead.
    scaled = portero.cli("scale", "portal", "3", check=False)
    assert scaled.returncode == 1, out(scaled)
    assert "the autoscaler sets its count (autoscale.enabled)" in out(scaled)
    assert "services.portal.autoscale.enabled: false" in out(scaled)
    assert next(s for s in portero.get("/services")["services"] if s["name"] == "portal")["desired"] == 2
    # Case 2: the router's port, the autoscaler's thresholds and a service's health interval, each on its line.
    old_port, new_port = portero.router_port, free_port(avoid={portero.router_port, portero.admin_port})
    portero.router_port = new_port
    service["health"] = {**service["health"], "interval_s": 2}
    portero.write_spec({"portal": service}, autoscale={**autoscale, "scale_up_threshold": 80})
    applied = portero.cli("apply")
    print(applied.stdout)
    lines = applied.stdout.strip().splitlines()
    assert lines[0] == "autoscale.scale_up_threshold: 90.0 -> 80.0: from the autoscaler's next pass", lines
    assert lines[1].startswith(f"router.port: {old_port} -> {new_port}: the router listens there now, hitless")
    assert lines[2] == "services.portal.health.interval_s: 1.0 -> 2.0: from the supervisor's next pass", lines
    answered = portero.wait(
        "the router on its new port",
        lambda: httpx.get(f"http://127.0.0.1:{new_port}/", trust_env=False).status_code == 200,
    )
    assert answered
    # A field read only at start is refused, and nothing of the spec changes.
    portero.write_spec(
        {"portal": service},
        autoscale={**autoscale, "scale_up_threshold": 75},
        monitoring={"series": {"fine_keep_s": 600}},
    )
    refused = portero.cli("apply", check=False)
    print(out(refused))
    assert refused.returncode == 1, out(refused)
    assert "monitoring.series.fine_keep_s: 3600.0 -> 600.0: needs a restart of portero" in out(refused)
    assert "nothing was changed" in out(refused)
    portero.write_spec({"portal": service}, autoscale={**autoscale, "scale_up_threshold": 80})
    assert portero.cli("apply").stdout.strip() == "no change"  # the threshold stayed at 80


def test_apply_tells_each_changed_alert_rule_and_webhook_and_each_takes_effect(portero):
    # Case 2: a rule's threshold, a new rule and a new webhook each get a line saying how they took effect (main
    # printed one truncated `alerts.rules: [...] -> [...]` line for the rules, cut at 60 characters), and they do.
    first, second = Receiver(), Receiver()
    hook = {"group_wait_s": 0, "group_interval_s": 0, "repeat_interval_s": 3600}
    memory = {"name": "portal-memory", "metric": "replica_memory_bytes", "threshold": 1e12, "for_s": 0}
    memory["aggregate"] = "last"
    alerts = {"default_rules": False, "rules": [memory], "webhooks": [{"name": "first", "url": first.url, **hook}]}
    try:
        portero.write_spec({"portal": portal_service(replicas=1)}, monitoring={"interval_s": 0.5}, alerts=alerts)
        portero.cli("up", "--detach")
        portero.ready(1)
        time.sleep(2)  # a few of the monitor's passes: no rule fires at 1 TB
        assert not portero.get("/monitoring/alerts")["alerts"]
        ready = {"name": "portal-ready", "metric": "service_ready_replicas", "match": {"service": "portal"}}
        ready |= {"op": ">=", "threshold": 1, "for_s": 0, "severity": "info"}
        alerts["rules"] = [{**memory, "threshold": 1}, ready]
        alerts["webhooks"] = [*alerts["webhooks"], {"name": "second", "url": second.url, **hook}]
        portero.write_spec({"portal": portal_service(replicas=1)}, monitoring={"interval_s": 0.5}, alerts=alerts)
        applied = portero.cli("apply")
        print(applied.stdout)
        how = "from the monitor's next pass (rules and receivers)"
        assert applied.stdout.strip().splitlines() == [
            f"alerts.rules[portal-memory].threshold: 1000000000000.0 -> 1.0: {how}",
            f"alerts.rules[portal-ready]: added: {how}",
            f"alerts.webhooks[second]: added: {how}",
        ]

        def firing() -> set[str]:
            return {a["name"] for a in portero.get("/monitoring/alerts")["alerts"] if a["state"] == "firing"}

        portero.wait("both rules to fire", lambda: firing() == {"portal-memory", "portal-ready"}, timeout_s=20)
        for receiver, name in ((first, "first"), (second, "second")):
            told = portero.wait(
                f"webhook {name} to be told of both",
                lambda r=receiver: {b["groupLabels"]["alertname"] for b in list(r.bodies)} >= firing(),
                timeout_s=20,
            )
            assert told
            assert {b["receiver"] for b in receiver.bodies} == {name}
            assert all(b["status"] == "firing" for b in receiver.bodies)
    finally:
        first.close()
        second.close()
