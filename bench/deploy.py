"""Deploy duration and failed requests per strategy, under continuous load, on the process runtime.

For each case a fresh portero runs the demo portal (3 replicas, one gunicorn worker each) while portero's load
generator keeps 6 keep-alive clients on `/work?ms=1` through the router; 1 s into the load the portal is deployed
from v1 to v2 (`POST /scalability/deploy`) and the load goes on until 3 s after the deployment ended. Kept: the
deployment record's `finished_at - started_at`, its steps, and the failed requests the clients saw (5xx or
transport errors) over the whole load.

Cases: rolling, blue-green and canary with short but realistic gates (`keep_old_s`, `analysis.window_s` and
`canary_pause_s` 5 s), blue-green with every default (keep_old_s and analysis window 30 s), and a bad revision
(`PORTAL_ERROR_RATE=0.5`: every 2nd request answers 500) deployed blue-green, which portero must roll back.
Three runs by default; prints median and max and writes bench/results/deploy.md.

    .venv/bin/python bench/deploy.py [--runs 3] [--quiet-wait 60] [--cases rolling,blue-green,...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from autoscale import (  # noqa: E402
    ROOT,
    Admin,
    Neighbours,
    code_version,
    poll,
    run_until_deadline,
    start_portero,
    stop_portero,
    wait_quiet,
)
from tests.integration.portero_cli import portal_service  # noqa: E402

from portero.loadgen import run_load  # noqa: E402
from portero.spec.models import DeploySettings  # noqa: E402

RESULTS = HERE / "results" / "deploy.md"
DEFAULTS = DeploySettings()
REPLICAS = 3
CLIENTS = 6
STUCK_S = 150  # a deployment still running this long is reported as stuck (the longest case takes about 35 s)
QUICK = {"keep_old_s": 5, "canary_pause_s": 5, "analysis": {"window_s": 5}}


@dataclass(frozen=True)
class Case:
    name: str
    strategy: str
    settings: dict[str, Any]
    described: str
    env: dict[str, str] = field(default_factory=dict)
    expect: str = "succeeded"


CASES = {
    "rolling": Case(
        "rolling",
        "rolling",
        QUICK,
        f"max_surge {DEFAULTS.max_surge}, max_unavailable {DEFAULTS.max_unavailable} (defaults); analysis.window_s 5",
    ),
    "blue-green": Case("blue-green", "blue-green", QUICK, "keep_old_s 5, analysis.window_s 5"),
    "canary": Case(
        "canary",
        "canary",
        QUICK,
        f"steps {'/'.join(f'{p:g}' for p in DEFAULTS.canary_steps)} % (default), canary_pause_s 5, analysis.window_s 5",
    ),
    "blue-green-defaults": Case(
        "blue-green, every default",
        "blue-green",
        {},
        f"keep_old_s {DEFAULTS.keep_old_s:g}, analysis.window_s {DEFAULTS.analysis.window_s:g} (defaults)",
    ),
    "bad-blue-green": Case(
        "blue-green, bad revision",
        "blue-green",
        QUICK,
        "keep_old_s 5, analysis.window_s 5; v2 has PORTAL_ERROR_RATE=0.5",
        {"PORTAL_ERROR_RATE": "0.5"},
        expect="rolled_back",
    ),
}


@dataclass
class Result:
    state: str = ""
    duration_s: float | None = None  # finished_at - started_at
    switch_s: float | None = None  # started -> traffic on the new revision (blue-green) / first canary step
    rollback_s: float | None = None  # switch -> rolled back
    failed: int = 0  # as the clients saw them
    recorded_failed: int = 0  # the deployment record's failed_requests
    requests: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    after_end: dict[str, int] = field(default_factory=dict)  # versions answering requests sent after the end
    steps: list[tuple[float, str]] = field(default_factory=list)
    reason: str = ""
    others_cpu: float = 0.0
    debug: dict[str, Any] = field(default_factory=dict)  # portero's own record (with --json, or when stuck)


def step_at(d: dict[str, Any], *texts: str) -> float | None:
    return next((s["at"] for s in d["steps"] if all(t in s["message"] for t in texts)), None)


async def deploy_once(tmp: Path, case: Case, args_json: bool) -> Result:
    result = Result()
    neighbours = Neighbours([str(tmp)])
    service = portal_service(replicas=REPLICAS, env={"WEB_CONCURRENCY": "1"})
    service["health"] = {"start_period_s": 30}  # the rest at its defaults
    instance = start_portero(tmp, service, deploy={"strategy": case.strategy, **case.settings})
    admin = Admin(instance)
    try:
        await poll(f"{REPLICAS} active replicas", lambda: _active(admin, REPLICAS), 60)
        await asyncio.sleep(1.0)
        stop = asyncio.Event()
        url = f"http://127.0.0.1:{instance.router_port}/work?ms=1"
        load_started = time.time()
        load = asyncio.ensure_future(run_load(url, concurrency=CLIENTS, duration_s=240, stop=stop, pause_s=0.005))
        await asyncio.sleep(1.0)
        body: dict[str, Any] = {"service": "portal", "version": "v2", "strategy": case.strategy}
        if case.env:
            body["env"] = case.env
        response = await admin.http.post(f"{instance.url}/deploy", json=body)
        started = response.json()
        if "id" not in started:
            raise RuntimeError(f"deploy refused: {started}")

        async def ended() -> dict[str, Any] | None:
            d: dict[str, Any] = await admin.get(f"/deployments/{started['id']}")
            return d if d["state"] != "running" else None

        try:
            d = await poll("the deployment's end", ended, STUCK_S, 0.2)
        except TimeoutError:
            # Still running long past what it should take: keep what portero says about it, and go on.
            d = await admin.get(f"/deployments/{started['id']}")
            d["state"], d["finished_at"] = f"still running after {STUCK_S:g} s", None
            result.debug = {
                "deployment": d,
                "servers": (await admin.get("/load-balancer/servers"))["servers"],
                "replicas": (await admin.get("/containers/list"))["containers"],
                "events": (await admin.get("/events", limit=1000))["events"],
            }
        await asyncio.sleep(3.0)
        stop.set()
        report = await load
        if args_json:
            result.debug.setdefault("deployment", d)
            result.debug.setdefault("events", (await admin.get("/events", limit=1000))["events"])
    finally:
        await admin.close()
        stop_portero(instance)
    result.state, result.reason = d["state"], d["reason"]
    result.duration_s = d["finished_at"] - d["started_at"] if d["finished_at"] is not None else None
    switched = step_at(d, "switched") or step_at(d, "canary step 1/")
    result.switch_s = switched - d["started_at"] if switched is not None else None
    rolled = step_at(d, "rolled back")
    if rolled is not None and switched is not None:
        result.rollback_s = rolled - switched
    result.failed, result.recorded_failed, result.requests = report.failed, d["failed_requests"], report.sent
    result.versions = dict(report.versions)
    end = (d["finished_at"] or time.time()) - load_started
    after: dict[str, int] = {}
    for sent, _, version, _ in report.timeline:
        if sent > end + 0.05:
            after[version or "(none)"] = after.get(version or "(none)", 0) + 1
    result.after_end = after
    result.steps = [(s["at"] - d["started_at"], s["message"]) for s in d["steps"]]
    result.others_cpu = neighbours.share()
    return result


async def _active(admin: Admin, n: int) -> bool:
    return len(await admin.active()) == n


# -- report --------------------------------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def summary(values: list[float | None], fmt: Any = fmt_s) -> tuple[str, str, str]:
    present = [v for v in values if v is not None]
    each = " / ".join(fmt(v) for v in values)
    return each, fmt(statistics.median(present)) if present else "—", fmt(max(present)) if present else "—"


def phase_lines(case: Case, runs: list[Result]) -> list[str]:
    _, switch, _ = summary([r.switch_s for r in runs])
    if case.expect == "rolled_back":
        _, back, top = summary([r.rollback_s for r in runs])
        recorded = " / ".join(str(r.recorded_failed) for r in runs)
        reasons = sorted({r.reason for r in runs})
        return [
            f"- {case.name}: traffic on the bad revision {switch} after the deploy started; rolled back {back}"
            f" (max {top}) after the switch; failed requests counted by the deployment record: {recorded};"
            f" reason: {'; '.join(reasons)}"
        ]
    if case.strategy == "blue-green":
        return [f"- {case.name}: green group up and traffic switched {switch} after the start"]
    if case.strategy == "canary":
        return [f"- {case.name}: first canary replica serving 10 % {switch} after the start"]
    return []


def report(results: dict[str, list[Result]], args: Args, started: datetime.datetime) -> str:
    lines = [
        f"# portero deployment bench, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- CPU: {os.cpu_count()} cores, {platform.machine()}; Python {platform.python_version()}",
        f"- load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- process runtime; the portal (examples/portal) at {REPLICAS} replicas, `WEB_CONCURRENCY=1`; health checks"
        f" and every other deploy setting at their defaults (progress_deadline_s {DEFAULTS.progress_deadline_s:g},"
        f" analysis.min_requests {DEFAULTS.analysis.min_requests}, analysis.max_error_rate"
        f" {100 * DEFAULTS.analysis.max_error_rate:g} %)",
        f"- code: {code_version()}",
        f"- load: {CLIENTS} keep-alive clients of portero's load generator on `/work?ms=1` through the router, from 1 s"
        " before the deploy until 3 s after it ended; a failed request is a 5xx or a transport error",
        "- duration: the deployment record's `finished_at - started_at`; v1 → v2 on a fresh portero each time",
        f"- {args.runs} runs per case; per-run values are separated by /",
        "",
        "| case | settings | deploy duration (each run) | median | max | failed requests (each run) | requests sent"
        " (median) | other processes' CPU (max) |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for key, runs in results.items():
        case = CASES[key]
        each, median, top = summary([r.duration_s for r in runs])
        failed = " / ".join(str(r.failed) for r in runs)
        sent = statistics.median(r.requests for r in runs)
        busy = max(r.others_cpu for r in runs)
        odd = [f"run {i + 1}: {r.state}" for i, r in enumerate(runs) if r.state != case.expect]
        label = case.name + (f" (**not {case.expect}**: {'; '.join(odd)})" if odd else "")
        lines.append(
            f"| {label} | {case.described} | {each} | {median} | {top} | {failed} | {sent:,.0f} | {100 * busy:.0f} % |"
        )
    lines += ["", "Phases (median over runs):", ""]
    lines += [line for key, runs in results.items() for line in phase_lines(CASES[key], runs)]
    lines += ["", "Versions that answered requests sent after each deployment ended:", ""]
    for key, runs in results.items():
        lines.append(f"- {CASES[key].name}: " + "; ".join(str(r.after_end) for r in runs))
    lines += ["", "Steps of the first run of each case (seconds from the start):", ""]
    for key, runs in results.items():
        lines.append(f"{CASES[key].name}:")
        lines.append("```")
        lines += [f"{at:5.1f}  {message}" for at, message in runs[0].steps]
        lines.append("```")
    for key, runs in results.items():
        for index, r in enumerate(runs):
            if r.state == CASES[key].expect:
                continue
            lines += ["", f"{CASES[key].name}, run {index + 1}: {r.state}; its steps:", "", "```"]
            lines += [f"{at:5.1f}  {message}" for at, message in r.steps]
            lines.append("```")
            servers = r.debug.get("servers", [])
            if servers:
                lines.append(
                    "Router endpoints then: "
                    + ", ".join(f"{s['address']} {s['state']} weight {s['effective_weight']}" for s in servers)
                )
            replicas = r.debug.get("replicas", [])
            if replicas:
                lines.append(
                    "Replicas then: " + ", ".join(f"{x['id']} rev {x.get('revision')} {x['state']}" for x in replicas)
                )
    return "\n".join(lines) + "\n"


class Args(argparse.Namespace):
    runs: int
    quiet_wait: float
    cases: str
    deadline: float
    json: str | None


async def main(args: Args) -> None:
    started = datetime.datetime.now(datetime.UTC)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    results: dict[str, list[Result]] = {c: [] for c in chosen}
    with tempfile.TemporaryDirectory(prefix="portero-deploy-") as tmp:
        for index in range(args.runs):
            for key in chosen:
                share = wait_quiet(args.quiet_wait, [tmp])
                result = await deploy_once(Path(tmp) / f"{key}-{index}", CASES[key], bool(args.json))
                results[key].append(result)
                print(
                    f"run {index + 1} {key}: {result.state} in {fmt_s(result.duration_s)} (switch "
                    f"{fmt_s(result.switch_s)}, rollback {fmt_s(result.rollback_s)}), failed {result.failed}/"
                    f"{result.requests} (recorded {result.recorded_failed}), versions {result.versions}, after the"
                    f" end {result.after_end}; other processes {100 * result.others_cpu:.0f} % (before:"
                    f" {100 * share:.0f} %)",
                    flush=True,
                )
    text = report(results, args, started)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(f"written to {RESULTS.relative_to(ROOT)}")
    if args.json:
        raw = {key: [r.debug for r in runs] for key, runs in results.items()}
        Path(args.json).write_text(json.dumps(raw, indent=1))
        print(f"deployment records and events written to {args.json}")


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=60, help="seconds to wait for a quiet machine per case")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--json", help="also write each deployment's record and the event log to this file")
    parser.add_argument("--deadline", type=float, default=2400, help="the whole bench stops after this many seconds")
    return parser.parse_args(namespace=Args())


if __name__ == "__main__":
    arguments = parse()
    run_until_deadline(main(arguments), arguments.deadline)
