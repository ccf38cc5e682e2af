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
import statistics
import time

import run
import targets

RUN_ARGS = run.Args(warmup=2, duration=5)  # what run.measure_once reads


def measure(variant: str, tree: str | None, connections: list[int], browser: bool) -> dict[int, run.Run]:
    target = "haproxy" if tree is None else "portero"
    with targets.Bench(("direct", target)) as bench:
        server = bench.servers[target]
        if tree is not None:
            server.stop()
            server.extra_env = {"PYTHONPATH": tree}
            server.start()
            time.sleep(1.0)  # the daemon's own start-up work (replicas, monitor) settles
        print(f"{variant}:", flush=True)
        return {count: run.measure_once(bench, target, count, browser, RUN_ARGS) for count in connections}


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
    rounds: dict[tuple[str, int], list[run.Run]] = {}
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
            p99s = " ".join(f"{s.p99_ms:.2f}ms" for s in samples)
            print(f"c={count:<5} {variant:8} {rps:9,.0f} req/s {cpu:6.1f} µs/req {ratio:5.2f}x  p99s {p99s}")


if __name__ == "__main__":
    main()
