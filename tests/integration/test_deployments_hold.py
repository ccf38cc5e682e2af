"""Deployments that hold when things change under them (issue 18): real replicas of the portal, the real
router, keep-alive load from a client throughout."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.integration.loaded import Loaded, deploy, routable, shares
from tests.integration.portero_cli import Portero, portal_service

pytestmark = pytest.mark.integration
WINDOW_S = 5.0


@pytest.fixture
def five(tmp_path):
    """The portal at 5 replicas with one sync worker each: a replica answers one request at a time, so a
    replica that gets more than its share makes its requests wait, and throughput shows it. Slow start off: it
    ramps a new replica's share on purpose, and each share here is 1/n."""
    instance = Portero(tmp_path)
    service = portal_service(replicas=5, balance={"slow_start_s": 0})
    service["health"]["start_period_s"] = 10
    instance.write_spec({"portal": service}, deploy={"strategy": "rolling", "analysis": {"p95_floor_s": 5}})
    instance.cli("up", "--detach")
    instance.ready(5)
    yield instance
    instance.stop()


async def test_a_rolling_deploy_of_5_gives_every_ready_replica_its_share_and_keeps_throughput(five):
    # Case 1 and the acceptance: 5 clients on a page that waits 100 ms; 5 replicas can take them all at once,
    # and a replica given more than its share makes requests wait (throughput falls).
    async with Loaded(f"http://127.0.0.1:{five.router_port}/wait?ms=100", concurrency=5) as load:
        await asyncio.sleep(3 * WINDOW_S)
        d = await deploy(five, {"version": "v2"})
        await asyncio.sleep(WINDOW_S)
    report = load.report
    assert d["state"] == "succeeded", d
    assert report.failed == 0, (report.statuses, report.errors)
    sent = load.sent_wall()
    spans = routable(five.events(service="portal"))
    first, deployed, last = sent[0], d["started_at"], sent[-1]
    windows = [(first + i * WINDOW_S, first + (i + 1) * WINDOW_S) for i in range(int((last - first) // WINDOW_S))]
    rates = [sum(1 for at in sent if a <= at < b) / WINDOW_S for a, b in windows]
    before = [rate for (a, b), rate in zip(windows, rates, strict=True) if b <= deployed]
    during = [rate for (a, b), rate in zip(windows, rates, strict=True) if b > deployed]
    baseline = sum(before) / len(before)
    print(f"throughput: {baseline:.1f}/s before; per 5-s window during and after: {[round(r, 1) for r in during]}")
    judged, off = 0, []
    for a, b in windows:
        actual, expected = shares(sent, report.answered_by, spans, a, b)
        for replica, want in expected.items():
            if want < 25:
                continue  # in rotation for a moment only: too few requests to judge a share by
            judged += 1
            got = actual.get(replica, 0)
            print(f"window {a - first:4.0f}-{b - first:2.0f} s {replica}: {got} answers, {want:.1f} its share")
            if abs(got - want) > 0.2 * want:
                off.append((replica, round(a - first), got, round(want, 1)))
    assert min(during) >= 0.9 * baseline, (baseline, during)
    assert off == [], off
    new = {r for r in report.answered_by if r.startswith("portal-2-")}
    assert len(new) == 5
    assert judged >= 15


# -- a deployment held in a canary pause: what may change under it ------------------------------------------------

HELD = {
    "strategy": "rolling",
    "canary_steps": [50, 100],
    "canary_pause_s": 300,  # a canary stays in its first step for as long as a test needs
    "analysis": {"p95_floor_s": 5},
}
CANARY = {**HELD, "strategy": "canary"}
REPLICAS_5 = {"initial": 5, "min": 0, "max": 10}
OTHER = {"endpoints": [{"address": "127.0.0.1:9"}]}  # routed only: the spec may lose the portal


@pytest.fixture
def held(tmp_path):
    instance = Portero(tmp_path)
    write(instance)
    instance.cli("up", "--detach")
    instance.ready(2)
    yield instance
    instance.stop()


def write(instance: Portero, *, portal: bool = True, **changes: Any) -> None:
    service = {**portal_service(replicas=2, balance={"slow_start_s": 0}), **changes}
    instance.write_spec({"portal": service, "other": OTHER} if portal else {"other": OTHER}, deploy=HELD)


def refused(result: subprocess.CompletedProcess[str], text: str) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert text in out, out
    return out


async def cli(instance: Portero, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: a test's load runs on this event loop."""
    return await asyncio.to_thread(instance.cli, *args, check=check, timeout=120)


def revisions(instance: Portero) -> list[int]:
    return [r["number"] for r in instance.get("/services/portal/revisions")["revisions"]]


def in_canary_step(instance: Portero) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        d: dict[str, Any] = instance.get("/deployments")["deployments"][0]
        return d if d["phase"] == "canary" else None

    result: dict[str, Any] = instance.wait("the canary step", found, timeout_s=30)
    return result


class Cases:
    """What went wrong, by the issue's case number: one test judges several cases, and each is judged on its own
    (a case that fails does not hide the next ones; the test fails naming every case that did)."""

    def __init__(self) -> None:
        self.broken: dict[int, list[str]] = {}

    def expect(self, case: int, ok: bool, what: str) -> bool:
        if not ok:
            self.broken.setdefault(case, []).append(what)
        return ok

    def refused(self, case: int, result: subprocess.CompletedProcess[str], text: str) -> bool:
        out = result.stdout + result.stderr
        return self.expect(case, result.returncode == 1 and text in out, f"not refused with {text!r}: {said(result)}")


def said(result: subprocess.CompletedProcess[str]) -> str:
    """What the CLI printed, on one line (the frame of a usage error left out)."""
    lines = (line.strip(" │╭╮╰╯─") for line in (result.stdout + result.stderr).splitlines())
    return " / ".join(line for line in lines if line)[:300]


async def put_spec(instance: Portero) -> httpx.Response:
    """What `apply` sends, without following the deployments it starts."""
    body = {"yaml": instance.spec_file.read_text(), "source": str(instance.spec_file)}
    async with httpx.AsyncClient(trust_env=False, auth=instance.auth, timeout=30) as client:
        return await client.put(f"{instance.url}/spec", json=body)


@pytest.mark.timeout(300)
async def test_changes_during_a_deployment_are_refused_with_nothing_changed_and_abort_goes_back_at_once(held):
    # Cases 3, 4, 5, 7, 8 and 10, under load: a canary in its pause, then every change an operator tries. The CLI
    # runs in a thread: the load's clients share this event loop.
    cases = Cases()
    async with Loaded(f"http://127.0.0.1:{held.router_port}/", concurrency=2, pause_s=0.02) as load:
        async with httpx.AsyncClient(trust_env=False, auth=held.auth, timeout=10) as client:
            body = {"service": "portal", "version": "v2", "strategy": "canary"}
            started = await client.post(f"{held.url}/deploy", json=body)
            assert started.status_code == 202, started.text
            d = await asyncio.to_thread(in_canary_step, held)
            assert revisions(held) == [1, 2]
            # Case 3: refused requests create nothing (main made a revision for each).
            cases.refused(
                3,
                await cli(held, "deploy", "portal", "--version", "v3", check=False),
                f"deployment {d['id']} of portal is still running",
            )
            for n in range(4, 13):
                again = await client.post(f"{held.url}/deploy", json={"service": "portal", "version": f"v{n}"})
                cases.expect(3, again.status_code == 409, f"deploy v{n}: {again.status_code} {again.text}")
        cases.expect(3, revisions(held) == [1, 2], f"revisions after refused deploys: {revisions(held)}")
        # Cases 4, 5 and 7: a change of the held service is refused and nothing changes (not a revision, not the
        # file's digest, not the count, not the deployment).
        for case, changes, verb in ((4, {"version": "v3"}, "changed"), (5, {"replicas": REPLICAS_5}, "changed")):
            write(held, **changes)
            out = await cli(held, "apply", check=False)
            if cases.refused(case, out, f"services.portal {verb} while deployment {d['id']}"):
                cases.expect(case, "nothing was changed" in out.stdout + out.stderr, "not said: nothing was changed")
            cases.expect(case, revisions(held) == [1, 2], f"revisions after apply: {revisions(held)}")
            desired = [s["desired"] for s in held.get("/services")["services"] if s["name"] == "portal"]
            cases.expect(case, desired == [2], f"desired replicas after apply: {desired}")
        # Case 10: a field the runtime ignores is refused.
        cases.refused(
            10,
            await cli(held, "deploy", "portal", "--image", "portal:v9", check=False),
            "image: the process runtime runs",
        )
        write(held, portal=False)
        cases.refused(7, await cli(held, "apply", check=False), f"services.portal removed while deployment {d['id']}")
        cases.expect(7, "portal" in {s["name"] for s in held.get("/services")["services"]}, "portal removed")
        state = held.get(f"/deployments/{d['id']}")["state"]
        cases.expect(7, state == "running", f"the deployment is {state}")
        # Case 8: abort, recorded with who asked; revision 1 takes every request from then on.
        aborted = await cli(held, "deploy", "portal", "--abort", check=False)
        aborted_at = time.time()
        told = f"deployment {d['id']} aborted: revision 1 serves portal"
        if cases.expect(8, told in aborted.stdout, f"abort said: {said(aborted)}"):
            ended = held.get(f"/deployments/{d['id']}")
            cases.expect(8, ended["state"] == "aborted", f"the deployment is {ended['state']}")
            cases.expect(8, ended["reason"].startswith("aborted by token "), f"reason: {ended['reason']!r}")
            twice = await cli(held, "deploy", "portal", "--abort", check=False)
            cases.refused(8, twice, "no deployment of portal is running")
            await asyncio.to_thread(
                held.wait, "the canary replica to stop", lambda: all(r["revision"] == 1 for r in held.replicas())
            )
            await asyncio.sleep(1.0)
    report = load.report
    if not cases.broken:  # after an abort: every request answered by revision 1
        sent = load.sent_wall()
        after = [version for at, (_, _, version, _) in zip(sent, report.timeline, strict=True) if at > aborted_at]
        cases.expect(8, bool(after) and set(after) == {"v1"}, f"answered after the abort by {Counter(after)}")
        # Case 4: the file (v3, 3 replicas; the portal back in it) converges once the deployment has ended.
        write(held, version="v3", replicas={"initial": 3, "min": 0, "max": 10})
        applied = await cli(held, "apply")
        told = "services.portal.version: v1 -> v3: revision 3, deployment"
        cases.expect(4, told in applied.stdout, f"apply said: {said(applied)}")
        cases.expect(4, (await cli(held, "apply")).stdout.strip() == "no change", "apply again: a change")
        cases.expect(4, {r["revision"] for r in held.ready(3)} == {3}, "not converged to the file")
    assert cases.broken == {}, "\n".join(f"case {n}: {' | '.join(what)}" for n, what in sorted(cases.broken.items()))
    assert report.failed == 0, (report.statuses, report.errors)


@pytest.mark.timeout(300)
async def test_the_serving_revision_is_never_pruned_from_history(held):
    # Case 3: eleven deployments aborted one after the other push revisions 2..12 through the ten kept;
    # revision 1 serves throughout and stays.
    for n in range(2, 13):
        started = held.http.post(
            f"{held.url}/deploy", json={"service": "portal", "version": f"v{n}", "strategy": "canary"}
        )
        assert started.status_code == 202, started.text
        aborted = held.http.post(f"{held.url}/deployments/{started.json()['id']}/abort")
        assert aborted.json()["state"] == "aborted", aborted.text
    kept = revisions(held)
    assert kept == [1, *range(3, 13)], kept  # the newest ten, and the serving one beside them (main dropped it)
    assert [r["number"] for r in held.get("/services/portal/revisions")["revisions"] if r["serving"]] == [1]
    held.cli("deploy", "portal", "--version", "v13", "--strategy", "canary", "--detach")
    assert revisions(held) == [1, *range(4, 14)]  # the oldest that neither serves nor is deployed goes
    held.cli("deploy", "portal", "--abort")
    rollback = held.cli("rollback", "portal", "1", check=False)
    refused(rollback, "revision 1 already serves portal")
    held.cli("rollback", "portal", "12", "--detach")
    assert held.get("/deployments")["deployments"][0]["to_revision"] == 12


async def test_a_restart_in_the_middle_of_a_deployment_ends_it_with_a_reason_and_up_converges_to_the_file(held):
    # Case 4 (restart) and the reason on every ended deployment. The file's own strategy: a canary that pauses.
    write(held, version="v2", deploy=CANARY)
    applied = await put_spec(held)
    assert applied.status_code == 200, applied.text
    first = in_canary_step(held)
    held.cli("down", "--keep-running")
    started = held.cli("up", "--detach")
    ended = held.get(f"/deployments/{first['id']}")
    assert ended["state"] == "aborted"
    assert ended["reason"] == "portero restarted during the deployment", ended
    # The file's template was never recorded as applied: `up` deploys it again (main said "no change").
    latest = held.get("/deployments")["deployments"][0]
    assert latest["id"] != first["id"]
    assert (latest["to_revision"], latest["state"]) == (2, "running"), latest
    assert "no change" not in started.stdout
    changes = applied.json()["changes"]
    assert f"services.portal.version: v1 -> v2: revision 2, deployment {first['id']} (canary)" in changes, changes


# -- the progress deadline -------------------------------------------------------------------------------------------

DEADLINE_S = 3


@pytest.fixture
def six(tmp_path):
    instance = Portero(tmp_path)
    service = portal_service(replicas=6, balance={"slow_start_s": 0})
    deploy_settings = {
        "strategy": "rolling",
        "progress_deadline_s": DEADLINE_S,
        "canary_steps": [50, 100],
        "canary_pause_s": 2,
        "analysis": {"window_s": 2, "min_requests": 5, "p95_floor_s": 5},
    }
    instance.write_spec({"portal": service}, deploy=deploy_settings)
    instance.cli("up", "--detach")
    instance.ready(6)
    yield instance
    instance.stop()


async def test_the_progress_deadline_runs_from_the_last_progress_and_not_in_planned_pauses(six):
    # Case 2: a rolling deploy of 6 replicas, each ready in about a second, takes twice the 3-s deadline; a canary
    # pauses 2 s at each of its two steps. Main counted the deadline from the start and rolled both back.
    async with Loaded(f"http://127.0.0.1:{six.router_port}/", concurrency=2, pause_s=0.02) as load:
        rolling = await deploy(six, {"version": "v2"})
        canary = await deploy(six, {"version": "v3", "strategy": "canary"})
    for d in (rolling, canary):
        took = d["finished_at"] - d["started_at"]
        print(f"{d['strategy']}: {d['state']} after {took:.1f} s ({d['reason'] or d['steps'][-1]['message']})")
        assert d["state"] == "succeeded", d["reason"]
        assert took > DEADLINE_S  # longer than the deadline: only progress kept it alive
    assert load.report.failed == 0, (load.report.statuses, load.report.errors)


async def test_a_deploy_at_zero_replicas_checks_the_new_revision_once_and_leaves_nothing_running(held):
    # Case 9: at zero replicas (min 0), the new revision is started once, checked and stopped; main left a
    # replica of the old revision running ("1/0 ready") until a request came.
    held.cli("scale", "portal", "0")
    held.wait("no replica", lambda: held.replicas() == [], timeout_s=30)
    deployed = held.cli("deploy", "portal", "--version", "v2", "--strategy", "rolling")
    assert "revision 2 serves" in deployed.stdout, deployed.stdout
    held.wait("no replica", lambda: held.replicas() == [], timeout_s=30)
    service = next(s for s in held.get("/services")["services"] if s["name"] == "portal")
    assert (service["desired"], service["ready"], service["revision"]) == (0, 0, 2), service


# -- latency judged where the answer was made --------------------------------------------------------------------


GATE_S = 0.4  # ten times the page's 40 ms: a replica's own p95 stays below it on a busy 2-core machine


@pytest.fixture
def queued(tmp_path):
    """3 replicas that take one request at a time each (`max_in_flight: 1`): more clients wait in the router."""
    instance = Portero(tmp_path)
    service = portal_service(replicas=3, balance={"slow_start_s": 0, "max_in_flight": 1})
    deploy_settings = {
        "strategy": "canary",
        "canary_steps": [34, 100],
        "canary_pause_s": 3,
        # An absolute gate only: a p95 over GATE_S fails the canary.
        "analysis": {"window_s": 3, "min_requests": 10, "max_p95_s": GATE_S, "max_p95_ratio": 100, "p95_floor_s": 0.01},
    }
    instance.write_spec({"portal": service}, deploy=deploy_settings)
    instance.cli("up", "--detach")
    instance.ready(3)
    yield instance
    instance.stop()


async def test_a_canarys_latency_is_judged_at_its_endpoints_not_with_the_routers_queue(queued):
    # Case 6: 36 clients on 3 replicas that answer in about 40 ms, one request at a time: clients wait in the
    # router's queue for most of their time. The canary's own answers are fast, so it passes; an analysis that
    # counted the queue would have failed it (p95 over GATE_S), as it failed a fix-forward canary on main.
    async with Loaded(f"http://127.0.0.1:{queued.router_port}/wait?ms=40", concurrency=36) as load:
        await asyncio.sleep(2)
        d = await deploy(queued, {"version": "v2"})
    latencies = sorted(load.report.latencies_s)
    clients_p95 = latencies[int(0.95 * len(latencies))]
    passed = [s["message"] for s in d["steps"] if "passed" in s["message"]]
    figures = d.get("analysis")
    history = queued.cli("history", "portal").stdout
    print(f"clients' p95 {clients_p95 * 1000:.0f} ms (queue included); the canary's analysis: {passed}; {figures}")
    print(history)
    assert clients_p95 > GATE_S  # the queue is there
    assert d["state"] == "succeeded", d["reason"]
    assert load.report.failed == 0, (load.report.statuses, load.report.errors)
    assert figures is not None, d
    # The queue is reported apart: its p95 is the router's, beside the endpoints' p95 that judged the canary.
    assert figures["requests"] >= 10, figures
    assert figures["p95_s"] <= GATE_S, figures
    assert figures["queued"] > 0, figures
    assert figures["queue_p95_s"] > figures["p95_s"], figures
    row = next(line for line in history.splitlines() if d["id"] in line)
    assert f"{figures['queue_p95_s'] * 1000:.0f} ms ({figures['queued']} waited)" in row, history
