"""One definition of a service's latency percentiles and error rates: over the last `WINDOW_S` seconds.

Theory of operation: `Traffic` carries totals that never go down (responses by status class, latency bucket
counts); the figures of a window are the difference between the totals now and the totals `WINDOW_S` ago, so
each pass keeps `(time, totals)` per service and endpoint and drops what is older than the window needs. The
percentiles come from the summed buckets of the window, never from an average of percentiles. Every reader (the
dashboard's cards, charts and legends, its endpoints table, `portero metrics`, the alert rules) reads these same
values, so they agree (`/metrics` exports the histogram itself: Prometheus computes its own windows). Rejected:
the last pass alone (one second: a p95 of a handful of requests; the header said 24 ms while the chart said
180 ms and the endpoints 433-662 ms, each of its own window).

Pure: totals and `now` in, windowed `Traffic` out.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Hashable

from portero.monitor.snapshot import ServiceSample, Traffic
from portero.router.stats import STATUS_CLASSES, LatencyHistogram

WINDOW_S = 60.0

Totals = tuple[float, tuple[int, ...], tuple[int, ...]]  # at, responses by class, latency bucket counts


class TrafficWindow:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.history: dict[Hashable, deque[Totals]] = {}

    def services(self, samples: list[ServiceSample], now: float) -> list[ServiceSample]:
        """Each service's and endpoint's traffic with its window's percentiles and error rates."""
        seen: set[Hashable] = set()
        out = []
        for service in samples:
            traffic = service.traffic
            if traffic is not None:
                seen.add(service.name)
                traffic = self.traffic(service.name, traffic, now)
            endpoints = []
            for endpoint in service.endpoints:
                key = (service.name, endpoint.address)
                seen.add(key)
                endpoints.append(dataclasses.replace(endpoint, traffic=self.traffic(key, endpoint.traffic, now)))
            out.append(dataclasses.replace(service, traffic=traffic, endpoints=endpoints))
        self.history = {key: kept for key, kept in self.history.items() if key in seen}
        return out

    def traffic(self, key: Hashable, traffic: Traffic, now: float) -> Traffic:
        responses = tuple(traffic.responses_total[name] for name in STATUS_CLASSES)
        kept = self.history.setdefault(key, deque())
        if kept and sum(responses) < sum(kept[-1][1]):
            kept.clear()  # another object under this key (an endpoint that came back): its totals started over
        kept.append((now, responses, traffic.latency_buckets))
        start = now - self.window_s
        while len(kept) > 1 and kept[1][0] <= start:
            kept.popleft()  # the oldest kept is the last one at or before the window's start
        if kept[0][0] <= start:
            base, base_buckets = kept[0][1], kept[0][2]
        else:  # nothing read that long ago: every answer counted so far is within the window
            base, base_buckets = (0,) * len(responses), (0,) * len(traffic.latency_buckets)
        answered = [a - b for a, b in zip(responses, base, strict=True)]
        latency = LatencyHistogram()
        latency.counts = [a - b for a, b in zip(traffic.latency_buckets, base_buckets, strict=True)]
        latency.count = sum(latency.counts)
        total = sum(answered)
        return dataclasses.replace(
            traffic,
            error_ratio=answered[4] / total if total else None,
            client_error_ratio=answered[3] / total if total else None,
            latency_p50_s=latency.percentile(50),
            latency_p95_s=latency.percentile(95),
            latency_p99_s=latency.percentile(99),
        )
