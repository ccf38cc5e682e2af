"""The autoscaler against a real step load and from zero, on the process runtime.

Each run starts a real portero (the demo portal, one gunicorn worker per replica, `/wait?ms=400` so that the
load is bound by concurrency, not by the 2 cores) with target tracking on in-flight requests (target 1 per
replica, min 1, max 10, a decision every second), then:

1. **step**: 10 keep-alive clients start at once. Measured from the step: the first scale-up decision; the first
   new replica *serving* (active in `GET /scalability/load-balancer/servers`) and the first request it answered;
   all 10 active; failed requests (5xx or transport errors) over the whole load.
2. **scale-down**: the load stops; the time until the autoscaler sets 1 and until one endpoint is left active.
3. **from zero**: a second portero with `min: 0` goes idle to zero replicas; one request is sent; its client-side
   wait and the autoscaler's own `cold_starts_s` are kept.

Three runs by default; prints median and max, the settings and a real decision log, and writes
bench/results/autoscale.md.

    .venv/bin/python bench/autoscale.py [--runs 3] [--stabilization-s 60] [--max-in-flight N] [--json FILE]

`stabilization_s` is 300 by default in a spec; the bench uses the signal window (60 s) so that the scale-down
shows within minutes. A shorter window than the signal window would let a steady load scale down (the average
still holds the quiet minute before the step once the stabilization window forgets the burst).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.integration.portero_cli import Portero, portal_service  # noqa: E402

from portero.loadgen import LoadReport, run_load  # noqa: E402
from portero.spec.models import Balance, ServiceAutoscale  # noqa: E402

RESULTS = HERE / "results" / "autoscale.md"
DEFAULTS = ServiceAutoscale()
CLIENTS = 10
WAIT_MS = 400
HOLD_AFTER_FULL_S = 5.0  # the load goes on this long after all 10 serve (scale-up overshoot would show)
STEP_TIMEOUT_S = 60.0
POLL_S = 0.05
BUSY_NEIGHBOURS = 0.25  # other processes' CPU (share of one core) below which the machine counts as quiet


# -- the machine's other tenants ------------------------------------------------------------------------------------


class Neighbours:
    """CPU time of the processes that are not this bench's nor its porteros' (whose command line names the bench's
    temporary directory, and their descendants). A lower bound: a process that starts and ends meanwhile is
    not seen."""

    def __init__(self, ours: Iterable[str]) -> None:
        self.marks = tuple(ours)
        self.started = time.monotonic()
        self.times = self._times()

    def _ours(self) -> set[int]:
        me = psutil.Process()
        pids = {me.pid, *(c.pid for c in me.children(recursive=True))}
        for process in psutil.process_iter(["pid", "cmdline"]):
            command = " ".join(process.info["cmdline"] or ())
            if any(mark in command for mark in self.marks):
                pids.add(process.pid)
                with contextlib.suppress(psutil.Error):
                    pids.update(c.pid for c in process.children(recursive=True))
        return pids

    def _times(self) -> dict[tuple[int, float], float]:
        ours = self._ours()
        times = {}
        for process in psutil.process_iter(["pid", "ppid", "create_time", "cpu_times"]):
            info = process.info
            if info["pid"] in ours or info["ppid"] == 2 or info["pid"] == 2 or info["cpu_times"] is None:
                continue
            times[(info["pid"], info["create_time"])] = info["cpu_times"].user + info["cpu_times"].system
        return times

    def share(self) -> float:
        elapsed = time.monotonic() - self.started
        used = sum(max(t - self.times.get(key, 0.0), 0.0) for key, t in self._times().items())
        return used / elapsed if elapsed > 0 else 0.0


def wait_quiet(budget_s: float, marks: Iterable[str]) -> float:
    """Wait up to `budget_s` for a second in which other processes use little CPU; return the last share seen."""
    end = time.monotonic() + budget_s
    share = 0.0
    while True:
        neighbours = Neighbours(marks)
        time.sleep(1.0)
        share = neighbours.share()
        if share <= BUSY_NEIGHBOURS or time.monotonic() >= end:
            return share


# -- a real portero ------------------------------------------------------------------------------------------------


def start_portero(tmp: Path, service: dict[str, Any], **top: Any) -> Portero:
    tmp.mkdir(parents=True, exist_ok=True)
    instance = Portero(tmp)
    instance.write_spec({"portal": service}, **top)
    instance.cli("up", "--detach", timeout=60)
    return instance


def stop_portero(instance: Portero) -> None:
    with contextlib.suppress(Exception):
        if (instance.state / "admin.json").exists():
            instance.cli("down", check=False, timeout=60)
    instance.kill_everything()


async def poll(what: str, check: Callable[[], Any], timeout_s: float, step_s: float = POLL_S) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            value = await check()
        except (httpx.HTTPError, KeyError, IndexError):
            value = None
        if value:
            return value
        await asyncio.sleep(step_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


class Admin:
    def __init__(self, instance: Portero) -> None:
        self.url = instance.url
        self.http = httpx.AsyncClient(trust_env=False, timeout=10, auth=instance.auth)

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(self.url + path, params=params)
        response.raise_for_status()
        return response.json()

    async def active(self) -> list[dict[str, Any]]:
        servers = (await self.get("/load-balancer/servers", service="portal"))["servers"]
        return [s for s in servers if s["state"] == "active" and s["source"] == "replica"]

    async def desired(self) -> int:
        return int((await self.get("/services"))["services"][0]["desired"])

    async def autoscaler(self) -> dict[str, Any]:
        return (await self.get("/autoscaler"))["services"][0]  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.http.aclose()


# -- one run -------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    decision_s: float | None = None  # step -> first scale-up decision
    last_decision_s: float | None = None  # step -> the decision that reached the peak count
    first_active_s: float | None = None  # step -> first new replica active in the router
    first_served_s: float | None = None  # step -> first request answered by a new replica
    full_s: float | None = None  # step -> 10 active
    path: str = ""  # the counts the autoscaler went through
    requests: int = 0
    failed: int = 0
    p95_s: float | None = None
    peak: int = 0
    down_decision_s: float | None = None  # load end -> desired 1
    down_s: float | None = None  # load end -> 1 active endpoint
    cold_wait_s: float | None = None  # client-side wait of the first request at zero
    cold_status: int | None = None
    cold_reported_s: float | None = None  # the autoscaler's cold_starts_s
    others_cpu: float = 0.0
    log: str = ""  # `portero autoscaler` after the step and scale-down
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the autoscaler's and the event log's own words (--json)


def autoscale_policy(args: Args, **extra: Any) -> dict[str, Any]:
    return {
        "cpu_percent": None,
        "in_flight": 1,
        "tick_s": 1,
        "stabilization_s": args.stabilization_s,
        **extra,
    }


def portal(initial: int, minimum: int, policy: dict[str, Any], max_in_flight: int = 0) -> dict[str, Any]:
    service = portal_service(replicas=initial, env={"WEB_CONCURRENCY": "1"}, autoscale=policy)
    service["replicas"] = {"initial": initial, "min": minimum, "max": 10}
    service["health"] = {"start_period_s": 30}  # otherwise the defaults: new replicas are probed every 0.2 s
    if max_in_flight:
        service["balance"] = {"max_in_flight": max_in_flight}  # the rest waits in the router's queue
    return service


async def step_and_down(tmp: Path, args: Args, run: Run, keep_log: bool) -> None:
    service = portal(1, 1, autoscale_policy(args), args.max_in_flight)
    instance = start_portero(tmp, service, autoscale={"enabled": True})
    admin = Admin(instance)
    try:
        before = await poll("1 active replica", lambda: _count(admin, 1), 60)
        initial = {s["address"] for s in before}
        await asyncio.sleep(args.settle_s)  # a service settled at 1: the signal windows hold no start-up readings
        stop = asyncio.Event()
        url = f"http://127.0.0.1:{instance.router_port}/wait?ms={WAIT_MS}"
        t0 = time.time()
        load = asyncio.ensure_future(run_load(url, concurrency=CLIENTS, duration_s=STEP_TIMEOUT_S + 30, stop=stop))
        full_at = None
        while time.time() - t0 < STEP_TIMEOUT_S:
            now = time.time() - t0
            active = await admin.active()
            new = [s for s in active if s["address"] not in initial]
            run.peak = max(run.peak, len(active))
            if new and run.first_active_s is None:
                run.first_active_s = now
            if any(s["requests"] > 0 for s in new) and run.first_served_s is None:
                run.first_served_s = now
            if len(active) >= CLIENTS and run.full_s is None:
                run.full_s, full_at = now, time.monotonic()
            if full_at is not None and time.monotonic() - full_at >= HOLD_AFTER_FULL_S:
                break
            await asyncio.sleep(POLL_S)
        stop.set()
        t1 = time.time()
        report: LoadReport = await load
        run.requests, run.failed, run.p95_s = report.sent, report.failed, report.percentile(95)
        if report.failed:
            run.notes.append(f"failures: statuses {dict(report.statuses)}, errors {dict(report.errors)}")
        status = await admin.autoscaler()
        ups = [d for d in status["decisions"] if d["changed"] and d["at"] >= t0 - 0.5 and d["desired"] > d["current"]]
        if ups:
            run.decision_s = ups[0]["at"] - t0
            run.last_decision_s = ups[-1]["at"] - t0
            run.path = " → ".join([str(ups[0]["current"]), *(str(d["desired"]) for d in ups)])
        # Scale-down: the autoscaler's decision, then the router left with one endpoint.
        # The signal window empties, the stabilization window forgets, a cooldown after each step down; and slack.
        limit = DEFAULTS.stable_window_s + args.stabilization_s + 3 * DEFAULTS.scale_down_cooldown_s + 60
        await poll("desired 1", lambda: _desired(admin, 1), limit, 0.2)
        run.down_decision_s = time.time() - t1
        await poll("1 active endpoint", lambda: _count(admin, 1), 60, 0.2)
        run.down_s = time.time() - t1
        if keep_log:
            run.log = instance.cli("autoscaler", timeout=30).stdout
        run.raw["step"] = {
            "t0": t0,
            "load_end": t1,
            "autoscaler": await admin.autoscaler(),
            "events": (await admin.get("/events", limit=1000))["events"],
        }
    finally:
        await admin.close()
        stop_portero(instance)


async def from_zero(tmp: Path, args: Args, run: Run) -> None:
    policy = autoscale_policy(args, idle_to_zero_s=args.idle_to_zero_s)
    instance = start_portero(tmp, portal(1, 0, policy, args.max_in_flight), autoscale={"enabled": True})
    admin = Admin(instance)
    try:
        await poll("desired 0", lambda: _desired(admin, 0), args.idle_to_zero_s + 60, 0.2)
        await poll("no replica", lambda: _no_replica(admin), 60, 0.2)
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            sent = time.monotonic()
            response = await client.get(f"http://127.0.0.1:{instance.router_port}/")
            run.cold_wait_s = time.monotonic() - sent
            run.cold_status = response.status_code
        reported = await poll("cold_starts_s", lambda: _cold(admin), 15, 0.2)
        run.cold_reported_s = reported[-1]
        run.raw["zero"] = {
            "autoscaler": await admin.autoscaler(),
            "events": (await admin.get("/events", limit=1000))["events"],
        }
    finally:
        await admin.close()
        stop_portero(instance)


async def _count(admin: Admin, n: int) -> list[dict[str, Any]] | None:
    active = await admin.active()
    return active if len(active) == n else None


async def _desired(admin: Admin, n: int) -> bool:
    return await admin.desired() == n


async def _no_replica(admin: Admin) -> bool:
    return not (await admin.get("/containers/list"))["containers"] and not await admin.active()


async def _cold(admin: Admin) -> list[float] | None:
    return (await admin.autoscaler())["cold_starts_s"] or None


async def one_run(index: int, base: Path, args: Args) -> Run:
    run = Run()
    marks = [str(base)]
    neighbours = Neighbours(marks)
    await step_and_down(base / f"step{index}", args, run, keep_log=index == 0)
    print(
        f"  decision {seconds(run.decision_s)}, first active {seconds(run.first_active_s)}, served "
        f"{seconds(run.first_served_s)}, 10 active {seconds(run.full_s)} ({run.path}), failed {run.failed}/"
        f"{run.requests}; down {seconds(run.down_decision_s)}/{seconds(run.down_s)}",
        flush=True,
    )
    await from_zero(base / f"zero{index}", args, run)
    run.others_cpu = neighbours.share()
    return run


# -- report --------------------------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def row(label: str, values: list[float | None], fmt: Callable[[float | None], str] = seconds) -> str:
    present = [v for v in values if v is not None]
    median = statistics.median(present) if present else None
    top = max(present) if present else None
    missing = " (missing in some runs)" if len(present) < len(values) else ""
    return f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {fmt(median)} | {fmt(top)}{missing} |"


def defaults_text() -> str:
    keys = (
        "scale_up_cooldown_s",
        "scale_down_cooldown_s",
        "stable_window_s",
        "panic_factor",
        "panic_s",
        "rate_period_s",
        "rate_max_add",
        "tolerance",
    )
    return ", ".join(f"{key} {getattr(DEFAULTS, key):g}" for key in keys)


def code_version() -> str:
    """The commit measured, and whether src/ had uncommitted changes (others edit it concurrently)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"commit {commit}" + (" with uncommitted changes in src/" if dirty else "")


def report(runs: list[Run], args: Args, started: datetime.datetime) -> str:
    def count(v: float | None) -> str:
        return "—" if v is None else f"{v:.0f}"

    def percent(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.0f} %"

    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    lines = [
        f"# portero autoscaling bench, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- CPU: {os.cpu_count()} cores, {platform.machine()}; Python {platform.python_version()}",
        f"- load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "- process runtime; the portal (examples/portal) with `WEB_CONCURRENCY=1` (one sync gunicorn worker per"
        f" replica); the load is {CLIENTS} keep-alive clients of portero's load generator on `/wait?ms={WAIT_MS}`"
        " through the router: it needs 10 replicas, whatever the CPU",
        "- `services.portal.autoscale`: `{in_flight: 1, cpu_percent: null, tick_s: 1, stabilization_s: "
        f"{args.stabilization_s:g}}}`, everything else at its default ({defaults_text()});"
        " `replicas: {initial: 1, min: 1, max: 10}`; health and balance at their defaults (slow_start_s"
        f" {Balance().slow_start_s:g})"
        + (f" but `balance.max_in_flight: {args.max_in_flight}`" if args.max_in_flight else ""),
        f"- before the step the service sits at 1 replica for {args.settle_s:g} s, longer than the"
        f" {DEFAULTS.stable_window_s:g} s signal window (a service that has been quiet for a while, not one just"
        " started)",
        f"- code: {code_version()}",
        f"- from zero: a second portero with `min: 0` and `idle_to_zero_s: {args.idle_to_zero_s:g}`; once it is at zero"
        " replicas, one `GET /` through the router",
        f"- {len(runs)} runs; times are from the step (or from the end of the load, or from the request)",
        "",
        f"| measure | {head} | median | max |",
        "|---|" + "---:|" * (len(runs) + 2),
        row("step → first scale-up decision", [r.decision_s for r in runs]),
        row("step → the decision that set the peak count", [r.last_decision_s for r in runs]),
        row("step → first new replica active in the router", [r.first_active_s for r in runs]),
        row("step → first request answered by a new replica", [r.first_served_s for r in runs]),
        row("step → 10 replicas active", [r.full_s for r in runs]),
        row("replicas at the peak", [float(r.peak) for r in runs], count),
        row("requests during the load", [float(r.requests) for r in runs], count),
        row("failed requests", [float(r.failed) for r in runs], count),
        row("p95 latency over the load", [r.p95_s for r in runs], lambda v: "—" if v is None else f"{v:.2f} s"),
        row("load end → autoscaler sets 1", [r.down_decision_s for r in runs]),
        row("load end → 1 endpoint left", [r.down_s for r in runs]),
        row("cold start: client's wait for the first request", [r.cold_wait_s for r in runs]),
        row("cold start: autoscaler's `cold_starts_s`", [r.cold_reported_s for r in runs]),
        row("other processes' CPU (share of a core)", [r.others_cpu for r in runs], percent),
        "",
        "Counts the autoscaler went through: " + "; ".join(f"run {i + 1}: {r.path or '—'}" for i, r in enumerate(runs)),
        "",
        "Cold-start answers: " + ", ".join(str(r.cold_status) for r in runs),
    ]
    notes = [f"- run {i + 1}: {n}" for i, r in enumerate(runs) for n in r.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    log = next((r.log for r in runs if r.log), "")
    if log:
        lines += ["", "## `portero autoscaler` after run 1 (step, then scale-down)", "", "```", log.rstrip(), "```"]
    return "\n".join(lines) + "\n"


class Args(argparse.Namespace):
    runs: int
    stabilization_s: float
    idle_to_zero_s: float
    quiet_wait: float
    settle_s: float
    deadline: float
    json: str | None
    max_in_flight: int
    out: str | None


async def main(args: Args) -> None:
    started = datetime.datetime.now(datetime.UTC)
    runs = []
    with tempfile.TemporaryDirectory(prefix="portero-autoscale-") as tmp:
        base = Path(tmp)
        for index in range(args.runs):
            share = wait_quiet(args.quiet_wait, [str(base)])
            print(f"run {index + 1}/{args.runs} (other processes at {100 * share:.0f} % of a core)", flush=True)
            run = await one_run(index, base, args)
            print(
                f"  cold start {seconds(run.cold_wait_s)} (reported {seconds(run.cold_reported_s)}, "
                f"{run.cold_status}); other processes {100 * run.others_cpu:.0f} % of a core",
                flush=True,
            )
            runs.append(run)
    text = report(runs, args, started)
    print(text)
    out = Path(args.out) if args.out else RESULTS
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.raw for r in runs], indent=1))
        print(f"raw decisions and events written to {args.json}")


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--stabilization-s",
        type=float,
        default=DEFAULTS.stable_window_s,
        help="scale-down window (300 by default in a spec; not below the signal window, or a steady load scales down)",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=DEFAULTS.stable_window_s + 5,
        help="seconds at 1 replica before the step (default: the signal window and 5 s)",
    )
    parser.add_argument("--idle-to-zero-s", type=float, default=3)
    parser.add_argument("--max-in-flight", type=int, default=0, help="set balance.max_in_flight (0: unset)")
    parser.add_argument("--out", help=f"write the report here instead of {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--quiet-wait", type=float, default=60, help="seconds to wait for a quiet machine per run")
    parser.add_argument("--json", help="also write each run's autoscaler status and event log to this file")
    parser.add_argument("--deadline", type=float, default=1800, help="the whole bench stops after this many seconds")
    return parser.parse_args(namespace=Args())


def _deadline(signum: int, frame: object) -> None:
    raise TimeoutError("the bench ran past its --deadline")


def run_until_deadline(run: Coroutine[Any, Any, None], deadline_s: float) -> None:
    """Run a bench, stopped by SIGALRM after `deadline_s` (a wedged portero must not hang `make bench`)."""
    signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(int(deadline_s))
    asyncio.run(run)


if __name__ == "__main__":
    arguments = parse()
    run_until_deadline(main(arguments), arguments.deadline)
