"""Interleaved A/B of two router trees, with HAProxy in every round as the yardstick.

    .venv/bin/python bench/ab.py --a /tmp/old/src [--b src] [--rounds 3] [--connections 50 --connections 1000]
                                 [--browser]

Each tree is a `src` directory with its own compiled router (`python setup.py build_ext --inplace` in the tree's
checkout); portero runs with that directory first on PYTHONPATH. Every round measures HAProxy, then A, then B,
with fresh processes, pinned as `make bench` pins them (targets.py), 2 s of warm-up and 5 s measured. Medians
and the per-round ratio to HAProxy are printed at the end: on this VM the speed of every process drifts between
runs, and a ratio taken within one round is what that drift changes least.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import targets


@dataclass
class Sample:
    rps: float
    cpu_us: float  # the proxy's user + system time per request
    p99: str


def wrk(port: int, connections: int, seconds: int, browser: bool) -> tuple[float, str]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    command += ["-s", str(Path(__file__).parent / "browser.lua")] if browser else []
    done = subprocess.run(
        targets.pinned(targets.LOAD_CORE, [*command, f"http://127.0.0.1:{port}/"]),
        capture_output=True,
        text=True,
        check=True,
    )
    rps = re.search(r"Requests/sec:\s+(\S+)", done.stdout)
    p99 = re.search(r"^\s+99%\s+(\S+)", done.stdout, re.MULTILINE)
    if rps is None:
        raise RuntimeError(f"wrk printed no rate: {done.stdout}")
    return float(rps.group(1)), p99.group(1) if p99 else "?"


def measure(variant: str, tree: str | None, connections: list[int], browser: bool) -> dict[int, Sample]:
    target = "haproxy" if tree is None else "portero"
    results = {}
    with targets.Bench(("direct", target)) as bench:
        server = bench.servers[target]
        if tree is not None:
            server.stop()
            server.extra_env = {"PYTHONPATH": tree}
            server.start()
            time.sleep(1.0)  # the daemon's own start-up work (replicas, monitor) settles
        port = targets.PORTS[target]
        for count in connections:
            wrk(port, count, 2, browser)
            process = psutil.Process(server.worker_pid())
            before = process.cpu_times()
            rps, p99 = wrk(port, count, 5, browser)
            after = process.cpu_times()
            used = after.user + after.system - before.user - before.system
            results[count] = Sample(rps, 1e6 * used / (rps * 5), p99)
            print(f"{variant:8} c={count:<5} {rps:9,.0f} req/s {results[count].cpu_us:6.1f} µs/req p99 {p99}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the src directory of tree A")
    parser.add_argument("--b", default=str(targets.ROOT / "src"), help="the src directory of tree B (default: this)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, action="append")
    parser.add_argument("--browser", action="store_true", help="browser.lua's headers")
    args = parser.parse_args()
    connections = args.connections or [50, 1000]
    variants = {"haproxy": None, "A": args.a, "B": args.b}
    rounds: dict[tuple[str, int], list[Sample]] = {}
    for number in range(args.rounds):
        print(f"round {number + 1} of {args.rounds}", flush=True)
        for variant, tree in variants.items():
            for count, sample in measure(variant, tree, connections, args.browser).items():
                rounds.setdefault((variant, count), []).append(sample)
    print("\nmedians (ratio: the median of each round's requests/s over HAProxy's in that round)")
    for count in connections:
        reference = rounds["haproxy", count]
        for variant in variants:
            samples = rounds[variant, count]
            ratio = statistics.median(s.rps / r.rps for s, r in zip(samples, reference, strict=True))
            rps = statistics.median(s.rps for s in samples)
            cpu = statistics.median(s.cpu_us for s in samples)
            p99s = " ".join(s.p99 for s in samples)
            print(f"c={count:<5} {variant:8} {rps:9,.0f} req/s {cpu:6.1f} µs/req {ratio:5.2f}x  p99s {p99s}")


if __name__ == "__main__":
    main()
