"""Micro-benchmark of the router's per-request decisions: ns per call, best of several runs.

    .venv/bin/python scripts/bench_decisions.py

Not a test: numbers depend on the machine. At 40,000 requests/s a request has 25 µs of CPU in all, so every
decision here should stay well under a microsecond. Loop overhead (~20-40 ns) is included in each figure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from portero.router.balancer import Balancer, ConsistentHash, LeastRequests, SmoothWeightedRoundRobin
from portero.router.breaker import CircuitBreaker
from portero.router.outlier import OutlierPolicy, OutlierState, record
from portero.router.stats import Counters, LatencyHistogram
from portero.router.target import Target

LOOPS = 100_000
RUNS = 5
KEYS = [f"session-{n}".encode() for n in range(1024)]

Body = Callable[[int], object]


def ns_per_call(body: Body, loops: int = LOOPS) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter_ns()
        body(loops)
        best = min(best, (time.perf_counter_ns() - start) / loops)
    return best


def endpoints(count: int, weight: int = 1) -> list[Target]:
    pool = [Target(f"10.0.0.{n}:8080", weight + n % 3) for n in range(count)]
    loads = random.Random(count)
    for target in pool:
        target.in_flight = loads.randrange(5)
    return pool


def picks(balancer: Balancer, pool: list[Target], now: float, keyed: bool = False) -> Body:
    def body(loops: int) -> None:
        pick = balancer.pick
        if keyed:
            for n in range(loops):
                pick(pool, now, KEYS[n & 1023])
        else:
            for _ in range(loops):
                pick(pool, now)

    return body


def peeks(balancer: Balancer, pool: list[Target], now: float) -> Body:
    def body(loops: int) -> None:
        peek = balancer.peek
        for _ in range(loops):
            peek(pool, now)

    return body


def flaps(balancer: Balancer, pool: list[Target]) -> Body:
    def body(loops: int) -> None:
        for n in range(loops):
            balancer.pick(pool[: len(pool) - (n & 1)], 0.0, b"k")  # the last endpoint ejected, then back

    return body


def first_builds(count: int, weight: int) -> Body:
    return lambda loops: [ConsistentHash().pick(endpoints(count, weight), 0.0, b"k") for _ in range(loops)]


def bench_balancers() -> None:
    rows: list[tuple[str, Callable[[list[Target]], Body]]] = [
        ("round_robin pick", lambda pool: picks(SmoothWeightedRoundRobin(), pool, 1e6)),
        ("round_robin peek", lambda pool: peeks(SmoothWeightedRoundRobin(), pool, 1e6)),
        ("round_robin pick, all in slow start", lambda pool: picks(SmoothWeightedRoundRobin(60.0), pool, 30.0)),
        ("least_requests pick", lambda pool: picks(LeastRequests(random.Random(1).random), pool, 1e6)),
        ("least_requests pick, all in slow start", lambda pool: picks(LeastRequests(random.random, 60.0), pool, 30.0)),
        ("hash pick with a key", lambda pool: picks(ConsistentHash(), pool, 1e6, keyed=True)),
        ("hash pick without a key", lambda pool: picks(ConsistentHash(), pool, 1e6)),
    ]
    print(f"{'ns per call':40} {'3 targets':>10} {'20 targets':>11}")
    for name, make in rows:
        small, large = (ns_per_call(make(endpoints(count))) for count in (3, 20))
        print(f"{name:40} {small:10.0f} {large:11.0f}")


def bench_ring_builds() -> None:
    for count, weight in ((3, 1), (20, 1), (20, 10)):
        cold = ns_per_call(first_builds(count, weight), 10)
        balancer, pool = ConsistentHash(), endpoints(count, weight)
        balancer.pick(pool, 0.0, b"k")
        warm = ns_per_call(flaps(balancer, pool), 20)
        print(f"hash ring, {count} targets of weight {weight}..{weight + 2}: ", end="")
        print(f"first build {cold / 1e6:.2f} ms, rebuild on eject/return {warm / 1e6:.2f} ms")


def bench_metrics_and_verdicts() -> None:
    histogram, counters, breaker = LatencyHistogram(), Counters(), CircuitBreaker()
    policy, state = OutlierPolicy(), OutlierState()
    samples = [random.Random(2).lognormvariate(-6.0, 1.0) for _ in range(1024)]

    def observe(loops: int) -> None:
        add = histogram.observe
        for n in range(loops):
            add(samples[n & 1023])

    def breaker_round(loops: int) -> None:
        for n in range(loops):
            breaker.allow(n * 1e-4)
            breaker.record(True, n * 1e-4)

    def statuses(loops: int) -> None:
        for _ in range(loops):
            counters.record_status(200)

    def outcomes(loops: int) -> None:
        for _ in range(loops):
            record(state, True, 0.0, policy, 0, 3)

    print(f"{'histogram observe':40} {ns_per_call(observe):10.0f}")
    print(f"{'counters record_status':40} {ns_per_call(statuses):10.0f}")
    print(f"{'breaker allow + record (closed)':40} {ns_per_call(breaker_round):10.0f}")
    print(f"{'outlier record (success)':40} {ns_per_call(outcomes):10.0f}")


if __name__ == "__main__":
    bench_balancers()
    bench_ring_builds()
    bench_metrics_and_verdicts()
