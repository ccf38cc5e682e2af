"""`make bench`: wrk through portero, HAProxy and nginx (configured alike, see targets.py) and direct, in one run.

Two layouts in the same run (`--workers 1,2`, targets.LAYOUTS): one worker per proxy (HAProxy `nbthread 1`,
nginx `worker_processes 1`, portero `router.workers: 1`) alone on core 0, wrk and the backend on core 1; and two
workers per proxy (`nbthread 2`, `worker_processes 2`, `router.workers: 2`) with the proxy, wrk and the backend
all on both cores. For each layout, target and for 50 and 1,000 connections: a short warm-up, then
`wrk -tW -cN -d10s --latency` (W: the layout's workers), with the CPU each group of processes used meanwhile
(the proxy, wrk, the backend, other processes, and what no process was charged with). Browser-like request
headers (browser.lua) are run through portero and HAProxy too. Then a perf profile of the router under load (one
worker), and the idle-connection memory test (idle_conns.py, after small and after browser-like requests).
Prints one report and writes it to bench/results/latest.md. About six minutes a round (both layouts), and three
more for the profile and the idle test. On a machine shared with other work, a run where other processes were
busy is measured again; `--rounds 3` interleaves three rounds and reports medians.

    .venv/bin/python bench/run.py [--duration 10] [--warmup 2] [--rounds 1] [--workers 1,2] [--no-idle]
                                  [--no-profile]
    .venv/bin/python bench/run.py --quick [--connections 50] [--rounds 3]   # portero and HAProxy only
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import idle_conns
import psutil
import targets

HERE = Path(__file__).resolve().parent
BROWSER_LUA = HERE / "browser.lua"
RESULTS = HERE / "results" / "latest.md"
CONNECTIONS = (50, 1000)
PROFILE_CONNECTIONS = 50
PROFILE_HZ = 499
TARGETS = ("direct", "haproxy", "nginx", "portero")
BROWSER_TARGETS = ("haproxy", "portero")
BUSY_NEIGHBOURS = 0.10  # other processes' CPU (share of one core) beyond which a run is measured again
PROFILES_KEPT = os.environ.get("BENCH_KEEP_PROFILES") == "1"  # copy perf's raw data to results/
RERUNS_MAX = 3  # bounds the bench's time on a busy machine...
QUIET_WAIT = [30.0]  # ...as do the seconds it may wait for other processes to be quiet before a run


class Args(argparse.Namespace):
    duration: int
    warmup: int
    rounds: int
    idle_connections: int
    no_idle: bool
    no_profile: bool
    quick: bool
    no_browser: bool
    connections: list[int] | None
    workers: list[int]


# Where the machine's CPU went during a run, each as a share of one core (this machine's two cores: 2.0 in all).
CPU_GROUPS = {
    "proxy": "the proxy's processes (portero: control plane, router parent and workers; nginx: master and workers)",
    "wrk": "wrk",
    "backend": "the nginx backend (master and workers)",
    "others": "processes outside the bench (a test suite on the same machine, say)",
    "uncharged": "the machine's busy time charged to none of those: interrupt and softirq work that came while no "
    "process ran, kernel threads, processes that started and ended within the run, this script",
    "idle": "idle",
}


@dataclass
class Run:
    target: str
    headers: str  # "plain" (wrk's own: Host only) or "browser"
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    cpu_us: float  # the proxy's (for direct: the backend's) user + system CPU per request, in microseconds
    workers: int = 1  # the layout: workers of each proxy (targets.LAYOUTS)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU_GROUPS -> share of one core over the run

    @property
    def others_cpu(self) -> float:
        """CPU that processes outside the bench used meanwhile, as a share of one core."""
        return self.cpu.get("others", 0.0)


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """requests/s, p50 and p99 in ms, socket errors, non-2xx/3xx responses."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rps, p50, p99, errors, int(non_2xx.group(1)) if non_2xx else 0


def wrk_command(layout: targets.Layout, port: int, connections: int, seconds: float, browser: bool) -> list[str]:
    """wrk with a thread per worker of the layout, on the layout's load cores."""
    command = ["wrk", f"-t{layout.workers}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s"]
    if browser:
        command += ["-s", str(BROWSER_LUA)]
    return targets.pinned(layout.load_cores, [*command, f"http://127.0.0.1:{port}/"])


def wrk(layout: targets.Layout, port: int, connections: int, seconds: float, browser: bool) -> str:
    command = wrk_command(layout, port, connections, seconds, browser)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


class Neighbours:
    """CPU time of the processes outside this bench's tree (a test suite on the same machine, say).

    A lower bound: a process that both starts and ends during the run is not seen (its parent's reaped-children
    times are not used, since they carry whatever the child did before the run as well).
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.times = self._times()

    @staticmethod
    def _times() -> dict[tuple[int, float], float]:
        me = psutil.Process()
        ours = {me.pid, *(child.pid for child in me.children(recursive=True))}
        times = {}
        for process in psutil.process_iter(["pid", "ppid", "create_time", "cpu_times"]):
            info = process.info
            if info["pid"] in ours or info["ppid"] == 2 or info["pid"] == 2 or info["cpu_times"] is None:
                continue  # ours, or a kernel thread (they carry our own network load)
            cpu = info["cpu_times"]
            times[(info["pid"], info["create_time"])] = cpu.user + cpu.system
        return times

    def share(self) -> float:
        elapsed = time.monotonic() - self.started
        now = self._times()
        used = sum(max(t - self.times.get(key, 0.0), 0.0) for key, t in now.items())
        return used / elapsed if elapsed > 0 else 0.0


def wait_quiet(budget: list[float]) -> None:
    """Wait (within what is left of the bench's waiting budget) until other processes are quiet for a second."""
    while budget[0] > 0:
        neighbours = Neighbours()
        time.sleep(1.0)
        budget[0] -= 1.0
        if neighbours.share() <= BUSY_NEIGHBOURS:
            return


def tree_times(server: targets.Server | None) -> dict[tuple[int, float], float]:
    """User + system CPU seconds of each process of `server`, by (pid, start time)."""
    times: dict[tuple[int, float], float] = {}
    for process in server.processes() if server is not None else ():
        with contextlib.suppress(psutil.Error):
            cpu = process.cpu_times()
            times[(process.pid, process.create_time())] = cpu.user + cpu.system
    return times


def children_seconds() -> float:
    """CPU seconds of this script's children that have ended and been waited for (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, from /proc/stat (steal and iowait left out)."""
    user, nice, system, idle, _iowait, irq, softirq = (int(v) for v in Path("/proc/stat").read_text().split()[1:8])
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, idle / ticks


class CpuMeter:
    """Where the machine's CPU went over one wrk run, by group (CPU_GROUPS), as shares of one core.

    The proxy and the backend: the user + system time of each of their processes (psutil), a process that starts
    during the run counted from zero. wrk: this script's reaped-children time (wrk is the only child that ends
    during the run). The machine's busy and idle time come from /proc/stat; what is busy but charged to no group
    is `uncharged`."""

    def __init__(self, proxy: targets.Server | None, backend: targets.Server) -> None:
        self.servers = {"proxy": proxy, "backend": backend}
        self.neighbours = Neighbours()
        self.before = {name: tree_times(server) for name, server in self.servers.items()}
        self.children = children_seconds()
        self.machine = machine_seconds()
        self.started = time.monotonic()
        self.elapsed = 0.0

    def used(self) -> dict[str, float]:
        """Shares of one core per group since the meter was made (call once wrk has exited)."""
        self.elapsed = elapsed = max(time.monotonic() - self.started, 1e-9)
        busy, idle = (now - before for now, before in zip(machine_seconds(), self.machine, strict=True))
        shares = {}
        for name, server in self.servers.items():
            before = self.before[name]
            after = tree_times(server)
            shares[name] = sum(max(t - before.get(key, 0.0), 0.0) for key, t in after.items()) / elapsed
        shares["wrk"] = (children_seconds() - self.children) / elapsed
        shares["others"] = self.neighbours.share()
        shares["uncharged"] = max(busy / elapsed - sum(shares.values()), 0.0)
        shares["idle"] = idle / elapsed
        return {name: shares[name] for name in CPU_GROUPS}


def measure_once(bench: targets.Bench, target: str, connections: int, browser: bool, args: Args) -> Run:
    port = targets.PORTS[target]
    layout = bench.layout
    wait_quiet(QUIET_WAIT)
    if args.warmup:
        wrk(layout, port, connections, args.warmup, browser)
    proxy = None if target == "direct" else bench.servers[target]
    meter = CpuMeter(proxy, bench.servers["backend"])
    output = wrk(layout, port, connections, args.duration, browser)
    cpu = meter.used()
    rps, p50, p99, errors, non_2xx = parse_wrk(output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    cpu_us = 1e6 * cpu["proxy" if proxy else "backend"] * meter.elapsed / max(requests, 1)
    headers = "browser" if browser else "plain"
    run = Run(target, headers, connections, rps, p50, p99, errors, non_2xx, cpu_us, layout.workers, cpu)
    shares = "  ".join(f"{name} {100 * share:.0f}" for name, share in cpu.items())
    print(
        f"  w={layout.workers} {target:8} {headers:7} c={connections:<5} {rps:>9,.0f} req/s  p50 {p50:.2f} ms  "
        f"p99 {p99:.2f} ms  errors {errors} non-2xx {non_2xx}  {cpu_us:.1f} us CPU/request  "
        f"CPU (% of a core): {shares}",
        flush=True,
    )
    return run


def measure(bench: targets.Bench, target: str, connections: int, browser: bool, args: Args, budget: list[int]) -> Run:
    """One run; again (once) when other processes took more than BUSY_NEIGHBOURS of a core meanwhile."""
    run = measure_once(bench, target, connections, browser, args)
    if run.others_cpu > BUSY_NEIGHBOURS and budget[0] > 0:
        budget[0] -= 1
        print("    (other processes were busy: measuring again)", flush=True)
        again = measure_once(bench, target, connections, browser, args)
        run = min(run, again, key=lambda r: r.others_cpu)
    return run


def median_run(runs: list[Run]) -> Run:
    """The medians of several runs of one case (errors added up)."""
    if len(runs) == 1:
        return runs[0]
    med = statistics.median
    return Run(
        runs[0].target,
        runs[0].headers,
        runs[0].connections,
        med(r.rps for r in runs),
        med(r.p50_ms for r in runs),
        med(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
        sum(r.non_2xx for r in runs),
        med(r.cpu_us for r in runs),
        runs[0].workers,
        {name: med(r.cpu.get(name, 0.0) for r in runs) for name in CPU_GROUPS},
    )


def throughput_table(runs: list[Run]) -> str:
    """One layout's runs; ratios to HAProxy with the same layout, headers and connections."""
    haproxy = {(r.workers, r.headers, r.connections): r for r in runs if r.target == "haproxy"}
    lines = [
        "| target | headers | connections | requests/s | p50 | p99 | socket errors / non-2xx | req/s vs HAProxy "
        "| p99 vs HAProxy | CPU per request | proxy CPU | wrk CPU | backend CPU | other processes' CPU "
        "| uncharged CPU | idle |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {name: i for i, name in enumerate(("haproxy", "nginx", "portero", "direct"))}
    for r in sorted(runs, key=lambda r: (r.workers, r.headers != "plain", r.connections, order[r.target])):
        base = haproxy.get((r.workers, r.headers, r.connections))
        ratio = f"{r.rps / base.rps:.2f}x" if base else "-"
        p99_ratio = f"{r.p99_ms / base.p99_ms:.2f}x" if base else "-"
        shares = " | ".join(
            "-" if r.target == "direct" and name == "proxy" else f"{100 * r.cpu.get(name, 0.0):.0f} %"
            for name in CPU_GROUPS
        )
        lines.append(
            f"| {r.target} | {r.headers} | {r.connections:,} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms "
            f"| {r.errors} / {r.non_2xx} | {ratio} | {p99_ratio} | {r.cpu_us:.1f} µs | {shares} |"
        )
    return "\n".join(lines)


# -- profile ------------------------------------------------------------------------------------------------------


def profile(bench: targets.Bench, browser: bool, seconds: float) -> str:
    """perf samples the router's worker (user and kernel code, with DWARF call stacks) while wrk loads it at 50
    connections. perf rather than py-spy: the router is compiled to C by mypyc, so its functions are C symbols."""
    perf = shutil.which("perf")
    if perf is None:
        return "perf is not installed (bench/provision.sh installs linux-perf); no profile.\n"
    pids = ",".join(str(p.pid) for p in bench.servers["portero"].serving())
    data = bench.dir / f"perf-{'browser' if browser else 'plain'}.data"
    port = targets.PORTS["portero"]
    load = subprocess.Popen(
        wrk_command(bench.layout, port, PROFILE_CONNECTIONS, seconds + 3, browser), stdout=subprocess.PIPE, text=True
    )
    time.sleep(1)
    record = [perf, "record", "-F", str(PROFILE_HZ), "--call-graph", "dwarf,16384", "-p", pids, "-o", str(data)]
    recorded = subprocess.run(
        [*record, "--", "sleep", f"{seconds:g}"], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    out, _ = load.communicate(timeout=seconds + 30)
    if recorded.returncode != 0 or not data.exists():
        return f"perf record failed: {recorded.stderr.strip()[-500:]}\n"
    stacks = subprocess.run(
        [perf, "script", "-i", str(data), "-F", "ip,sym,dso"], capture_output=True, text=True, timeout=600, check=False
    )
    if PROFILES_KEPT:
        shutil.copy(data, RESULTS.parent / data.name)
    return summarize(stacks.stdout, parse_wrk(out)[0], browser, seconds)


ROUTER_DSO = "portero_router__mypyc"
KERNEL_SENDING = ("ksys_write", "__sys_sendto", "__sys_sendmsg", "sock_write_iter")
KERNEL_RECEIVING = ("ksys_read", "__sys_recvfrom", "sock_read_iter")
CATEGORIES = {
    "send": "kernel: sending (write → TCP over loopback → waking the receiver)",
    "recv": "kernel: receiving (read)",
    "kernel": "kernel: other (epoll wait, accept, timers, interrupts)",
    "parse": "HTTP parsing (llhttp via httptools, and its callbacks' glue)",
    "loop": "event loop (uvloop and libuv, outside the callbacks)",
    "router": "router code (compiled by mypyc), with the CPython runtime it calls",
    "python": "other Python (the worker's other tasks: reports to its parent, health checks)",
}


def summarize(script: str, rps: float, browser: bool, seconds: float, top: int = 12) -> str:
    """Shares by category and by router function, from `perf script` stacks (leaf first).

    A sample in CPython's runtime or libc (allocation, method calls, memchr) is charged to the nearest router
    function on its stack, so a router function's share is what it costs, not only its own instructions."""
    by_category: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    total = 0
    for block in script.split("\n\n"):
        frames = [line.split(None, 1)[1] for line in block.strip().splitlines() if len(line.split(None, 1)) == 2]
        if not frames:
            continue
        total += 1
        leaf = frames[0]
        router = next((f for f in frames if ROUTER_DSO in f and " CPyDef_" in " " + f), None)
        if "[kernel.kallsyms]" in leaf:
            chain = " ".join(frames)
            category = (
                "send"
                if any(s in chain for s in KERNEL_SENDING)
                else "recv"
                if any(s in chain for s in KERNEL_RECEIVING)
                else "kernel"
            )
        elif "httptools" in leaf or "llhttp" in leaf:
            category = "parse"
        elif "uvloop" in leaf:
            category = "loop"
        elif router is not None:
            category = "router"
            by_function[router_function(router)] += 1
        else:
            category = "python"
        by_category[category] += 1
    if not total:
        return "perf recorded no samples.\n"
    title = "browser-like headers" if browser else "plain requests (wrk's bare GET)"
    per_request = 1e6 / rps if rps else 0.0  # µs of the router's core per request, as it is busy all the time
    lines = [
        f"### {title}",
        "",
        f"50 connections; {total:,} samples at {PROFILE_HZ} Hz over {seconds:g} s; {rps:,.0f} requests/s while "
        f"sampled (perf slows the router a little). µs per request: the share times {per_request:.1f} µs, the "
        "core's time per request at that rate.",
        "",
        "| where | share | µs per request |",
        "|---|---:|---:|",
    ]
    for key, name in CATEGORIES.items():
        share = by_category[key] / total
        lines.append(f"| {name} | {100 * share:.1f} % | {share * per_request:.1f} |")
    lines += ["", "Router functions (their own code and the runtime they call):", ""]
    lines += ["| function | share |", "|---|---:|"]
    for name, count in by_function.most_common(top):
        lines.append(f"| `{name}` | {100 * count / total:.1f} % |")
    return "\n".join(lines) + "\n"


def router_function(frame: str) -> str:
    """`CPyDef_client___ClientConnection___on_header (...)` -> `client.ClientConnection.on_header`."""
    symbol = frame.split(" ", 1)[0].removeprefix("CPyDef_")
    return ".".join(part for part in symbol.split("___") if part)


# -- the report ---------------------------------------------------------------------------------------------------


def version(command: list[str], pattern: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=targets.ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine(layouts: list[targets.Layout]) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mhz = re.search(r"cpu MHz\s*:\s*(.+)", cpuinfo)
    python = targets.ROOT / ".venv" / "bin" / "python"
    libs = subprocess.run(
        [str(python), "-c", "import uvloop, httptools; print(uvloop.__version__, httptools.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    load = os.getloadavg()
    wrk_v = version(["wrk", "-v"], r"wrk (?:debian/)?(\S+)")
    haproxy_v = version(["haproxy", "-v"], r"version (\S+)")
    nginx_v = version(["nginx", "-v"], r"nginx/(\S+)")
    dirty = " with uncommitted changes in src/" if git("status", "--porcelain", "src") else ""
    return "\n".join(
        [
            f"- portero at commit {git('rev-parse', '--short', 'HEAD')}{dirty}",
            f"- CPU: {os.cpu_count()} cores (`nproc`), {model.group(1) if model else '?'}"
            f" at {mhz.group(1).strip() if mhz else '?'} MHz",
            f"- kernel {platform.release()}, {platform.machine()}",
            f"- wrk {wrk_v}, HAProxy {haproxy_v}, nginx {nginx_v}, "
            f"Python {platform.python_version()}, uvloop {libs[0]}, httptools {libs[1]}",
            f"- load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            f"- layouts: {'; '.join(layout.describe() for layout in layouts)}; all of them at nice {targets.NICE}",
        ]
    )


def worker_counts(value: str) -> list[int]:
    """`--workers 1,2` -> [1, 2]: each a layout of targets.LAYOUTS."""
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(count not in targets.LAYOUTS for count in counts):
        known = ", ".join(str(count) for count in targets.LAYOUTS)
        raise argparse.ArgumentTypeError(f"--workers takes a comma-separated list of {known}; got {value!r}")
    return list(dict.fromkeys(counts))


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each measured run (0: none)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every case this many times, interleaved, and report the median (for a busy machine)",
    )
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=list(targets.LAYOUTS),
        help="the layouts to run, by workers per proxy (default 1,2: both, in the same run)",
    )
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-connection memory test")
    parser.add_argument("--no-profile", action="store_true", help="skip the perf profile")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="portero and HAProxy only, 5-s runs, no idle test and no profile (for iterating on the router)",
    )
    parser.add_argument(
        "--connections", type=int, action="append", help="connection count to run (repeatable; default 50 and 1000)"
    )
    parser.add_argument("--no-browser", action="store_true", help="skip the browser-like header runs")
    args = parser.parse_args(namespace=Args())
    if args.quick:
        args.no_idle = args.no_profile = True
        if "--duration" not in sys.argv:
            args.duration = 5
        if "--warmup" not in sys.argv:
            args.warmup = 1
    return args


def throughput(args: Args, names: tuple[str, ...], layouts: list[targets.Layout]) -> tuple[list[Run], list[str]]:
    """Every case in every layout, `args.rounds` times, interleaved: each round starts every layout's servers
    afresh, one layout after the other, so that a busy spell on the machine hits every target alike. The profile
    is taken in the one-worker layout, after its last round."""
    connection_counts = tuple(args.connections or CONNECTIONS)
    budget = [RERUNS_MAX if args.rounds == 1 else 0]
    cases = [(t, c, False) for c in connection_counts for t in TARGETS if t in names]
    cases += [(t, c, True) for c in connection_counts for t in BROWSER_TARGETS if not args.no_browser]
    rounds: dict[tuple[int, str, int, bool], list[Run]] = collections.defaultdict(list)
    profiles: list[str] = []
    proxies = tuple(n for n in ("haproxy", "nginx", "portero") if n in names)
    print(f"throughput: {args.duration:g} s per run after {args.warmup:g} s of warm-up", flush=True)
    for number in range(args.rounds):
        for layout in layouts:
            print(f"round {number + 1} of {args.rounds}: {layout.describe()}", flush=True)
            with targets.Bench(proxies, layout) as bench:
                for target, connections, browser in cases:
                    run = measure(bench, target, connections, browser, args, budget)
                    rounds[layout.workers, target, connections, browser].append(run)
                if layout.workers == 1 and number == args.rounds - 1 and not args.no_profile:
                    print("profile: perf on the router's worker, 10 s per header variant", flush=True)
                    profiles = [profile(bench, browser, 10) for browser in (False, True)]
    return [median_run(r) for r in rounds.values()], profiles


def throughput_section(runs: list[Run], layouts: list[targets.Layout], args: Args) -> list[str]:
    threads = "/".join(str(layout.workers) for layout in layouts)
    report = [
        "## Throughput and latency",
        "",
        f"`wrk -tW -cN -d{args.duration:g}s --latency --timeout 5s` (W = {threads}: a thread per worker) after "
        f"{args.warmup:g} s of warm-up"
        f"{f', {args.rounds} interleaved rounds, medians shown (errors summed)' if args.rounds > 1 else ''}; "
        "a 12-byte response; keep-alive on both sides. Ratios are to HAProxy with the same layout, headers and "
        "connections. `direct` is wrk straight to the backend: the ceiling of the load's cores, not a proxy. "
        "CPU per request: the user + system time of the proxy's processes over the run divided by the requests "
        "(portero: its control plane, the router's parent and workers; nginx: master and workers; for `direct`, "
        "the backend's). The CPU columns say where the machine's CPU went during the run, as a share of one core "
        f"(the machine has {os.cpu_count()}): "
        + "; ".join(f"{name}: {about}" for name, about in CPU_GROUPS.items() if name != "idle")
        + ". wrk's own CPU is measured, not estimated: its rusage once it has exited. A run where other processes "
        f"used more than {100 * BUSY_NEIGHBOURS:.0f} % of a core is measured once more and the quieter of the two "
        "is kept.",
        "",
    ]
    for layout in layouts:
        ours = [r for r in runs if r.workers == layout.workers]
        report += [f"### {layout.workers} worker{'s' if layout.workers > 1 else ''}", ""]
        report += [f"{layout.describe()}.", "", throughput_table(ours), ""]
    return report


def main() -> None:
    args = parse_args()
    connection_counts = tuple(args.connections or CONNECTIONS)
    names = ("haproxy", "portero") if args.quick else TARGETS
    layouts = [targets.LAYOUTS[count] for count in args.workers]
    targets.check_tools()
    nofile = targets.raise_nofile(targets.MAX_CONNS * 2 + 1000)
    too_low = nofile < max(connection_counts) + 100
    if too_low or (not args.no_idle and nofile < args.idle_connections + 200):
        sys.exit(f"bench: open-file limit is {nofile}, too low; raise `ulimit -n` (hard limit) and re-run")
    started = time.monotonic()
    about = machine(layouts)
    print(about, flush=True)
    runs, profiles = throughput(args, names, layouts)
    idle: dict[bool, list[idle_conns.IdleResult]] = {}
    for browser in () if args.no_idle else (False, True):
        # Fresh processes each time: memory pooled by earlier runs would hide the cost per connection.
        with targets.Bench(("haproxy", "nginx", "portero"), targets.LAYOUTS[1]) as bench:
            idle[browser] = idle_conns.run(bench, ["portero", "haproxy", "nginx"], args.idle_connections, 3.0, browser)
    report = [
        f"# portero bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        about,
        "",
        *throughput_section(runs, layouts, args),
    ]
    if idle:
        report += [
            "## Idle keep-alive connections",
            "",
            f"{args.idle_connections:,} client connections, each after one answered request, held 3 s; RSS of the "
            "serving processes (portero: the router's worker; nginx: its worker) before and after, with one worker "
            "each (fresh processes for each table). Errors: connections that failed to open or whose second "
            "request, after the hold, did not get 200.",
            "",
        ]
        for browser, results in idle.items():
            kind = "browser-like request (browser.lua's headers)" if browser else "small request (`GET /`, 3 headers)"
            report += [f"After one {kind}:", "", idle_conns.table(results), ""]
    if profiles:
        report += ["## Where the router's time goes (perf)", "", *profiles]
    report.append(f"Total bench time: {time.monotonic() - started:.0f} s.")
    text = "\n".join(report) + "\n"
    path = RESULTS.with_name("quick.md") if args.quick else RESULTS  # a quick run never replaces the full report
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
