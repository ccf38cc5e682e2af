"""The router's counts, from its workers to the control plane, without losing one.

Theory of operation. Each worker keeps plain cumulative counters per stats object (a service's: the answers its
clients got; an endpoint's: the tries it served, its faults, the time they took). Every REPORT_S it sends the
*difference* since its last report (`Reporter`), together with gauges that are true now (requests in flight, an
endpoint's state, breaker, ejection). An endpoint that leaves the worker is reported once more after it left, so
its last counts travel too. The parent adds the differences of every worker into one pending sum and keeps each
worker's latest gauges (`Merge`); it hands the sum to the control plane and starts a new one, or keeps adding to
it while the control plane is away. The control plane adds each sum into its totals (`RouterView`), which never
go down and outlive an endpoint by RETAIN_S, so that the monitor and a deployment's analysis, which read totals at
their own pace, still see the last answers of an endpoint that left between two of their reads.

Differences rather than totals: a worker that restarts, or is replaced, starts from zero without anybody having
to notice, and the sums of several workers are just sums. Pure data, no I/O: the shells (worker.py, parent.py,
link.py) move the messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from portero.router.stats import BOUNDS_S, FAULTS, STATUS_CLASSES, LatencyHistogram

if TYPE_CHECKING:
    from portero.router.server import Router
    from portero.router.service import Endpoint, Stats

REPORT_S = 0.25  # how often a worker reports, and the parent hands the sum on
RETAIN_S = 600.0  # how long the control plane keeps the totals of an endpoint that is gone
BUCKETS = len(BOUNDS_S) + 1
BREAKER_RANK = {"closed": 0, "half_open": 1, "open": 2}  # the worst of several workers' breakers is shown

Key = tuple[str, str]  # (service, endpoint address)


def _zeros(n: int) -> list[int]:
    return [0] * n


@dataclass
class Tally:
    """Counts of one stats object: cumulative, or the difference between two readings."""

    requests: int = 0
    responses: list[int] = field(default_factory=lambda: _zeros(len(STATUS_CLASSES)))
    faults: list[int] = field(default_factory=lambda: _zeros(len(FAULTS)))
    retries: int = 0
    ejections: int = 0
    own: int = 0
    aborted: int = 0
    buckets: list[int] = field(default_factory=lambda: _zeros(BUCKETS))
    latency_sum_s: float = 0.0
    waits: list[int] = field(default_factory=lambda: _zeros(BUCKETS))  # a service's queue waits (Stats.waits)

    @staticmethod
    def of(stats: Stats) -> Tally:
        c, h = stats.counters, stats.latency
        return Tally(
            c.requests,
            list(c.responses),
            list(c.faults),
            c.retries,
            c.ejections,
            c.own,
            c.aborted,
            list(h.counts),
            h.sum,
            list(stats.waits.counts),
        )

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.responses = [a + b for a, b in zip(self.responses, other.responses, strict=True)]
        self.faults = [a + b for a, b in zip(self.faults, other.faults, strict=True)]
        self.retries += other.retries
        self.ejections += other.ejections
        self.own += other.own
        self.aborted += other.aborted
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.latency_sum_s += other.latency_sum_s
        self.waits = [a + b for a, b in zip(self.waits, other.waits, strict=True)]

    def minus(self, base: Tally) -> Tally:
        return Tally(
            self.requests - base.requests,
            [a - b for a, b in zip(self.responses, base.responses, strict=True)],
            [a - b for a, b in zip(self.faults, base.faults, strict=True)],
            self.retries - base.retries,
            self.ejections - base.ejections,
            self.own - base.own,
            self.aborted - base.aborted,
            [a - b for a, b in zip(self.buckets, base.buckets, strict=True)],
            self.latency_sum_s - base.latency_sum_s,
            [a - b for a, b in zip(self.waits, base.waits, strict=True)],
        )

    def empty(self) -> bool:
        return not (
            self.requests or any(self.responses) or any(self.faults) or self.retries or self.ejections
        ) and not (self.own or self.aborted or any(self.buckets) or any(self.waits))

    @property
    def answered(self) -> int:
        return sum(self.responses)

    @property
    def errors(self) -> int:
        """5xx answers and faults: what a client or a deployment's analysis counts as failed."""
        return self.responses[4] + sum(self.faults)

    def histogram(self) -> LatencyHistogram:
        histogram = LatencyHistogram()
        histogram.counts = list(self.buckets)
        histogram.count = sum(self.buckets)
        histogram.sum = self.latency_sum_s
        return histogram

    def waits_histogram(self) -> LatencyHistogram:
        """The queue waits (no sum kept: percentiles and counts only)."""
        histogram = LatencyHistogram()
        histogram.counts = list(self.waits)
        histogram.count = sum(self.waits)
        return histogram

    def to_json(self) -> list[Any]:
        return [
            self.requests,
            self.responses,
            self.faults,
            self.retries,
            self.ejections,
            self.own,
            self.aborted,
            self.buckets,
            self.latency_sum_s,
            self.waits,
        ]

    @staticmethod
    def from_json(data: list[Any]) -> Tally:
        requests, responses, faults, retries, ejections, own, aborted, buckets, latency_sum, *rest = data
        waits = rest[0] if rest else _zeros(BUCKETS)  # a worker of the version before queue waits were counted
        if (
            len(responses) != len(STATUS_CLASSES)
            or len(faults) != len(FAULTS)
            or len(buckets) != BUCKETS
            or len(waits) != BUCKETS
        ):
            raise ValueError("a stats report of another shape (another portero version?)")
        return Tally(
            int(requests),
            [int(v) for v in responses],
            [int(v) for v in faults],
            int(retries),
            int(ejections),
            int(own),
            int(aborted),
            [int(v) for v in buckets],
            float(latency_sum),
            [int(v) for v in waits],
        )


# -- in a worker ---------------------------------------------------------------------------------------------------


class Reporter:
    """A worker's reports: what each stats object gained since the last one, and the gauges of now."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._bases: dict[int, tuple[Stats, Tally]] = {}  # id(stats) -> (the object, kept alive; its last reading)
        self._leaving: list[Endpoint] = []  # left the worker; reported once more, for what they did meanwhile
        self._handshakes: dict[str, int] = {}  # the router's TLS handshake counts at the last report

    def _delta(self, stats: Stats) -> Tally:
        now = Tally.of(stats)
        known = self._bases.get(id(stats))
        self._bases[id(stats)] = (stats, now)
        return now if known is None else now.minus(known[1])

    def report(self) -> dict[str, Any]:
        router = self.router
        clock = router.now()
        services: dict[str, Any] = {}
        endpoints: list[Any] = []
        seen: set[int] = set()
        for name, route in router.services.items():
            delta = self._delta(route.stats)
            seen.add(id(route.stats))
            services[name] = {"d": None if delta.empty() else delta.to_json(), "queued": len(route.queue)}
            for address, endpoint in route.endpoints.items():
                delta = self._delta(endpoint.stats)
                seen.add(id(endpoint.stats))
                gauges = {
                    "in_flight": endpoint.target.in_flight,
                    "state": endpoint.state.value,
                    "weight": endpoint.target.weight,
                    "effective_weight": round(route.effective_weight(endpoint, clock), 2),
                    "breaker": endpoint.breaker.state.value,
                    "ejected": endpoint.outlier.ejected_until is not None and clock < endpoint.outlier.ejected_until,
                    "health": None if endpoint.health is None else ("up" if endpoint.health.healthy else "down"),
                    "source": endpoint.source,
                    "replica": endpoint.replica_id,
                }
                endpoints.append([name, address, None if delta.empty() else delta.to_json(), gauges])
        leaving, self._leaving = self._leaving + router.take_departed(), []
        for endpoint in leaving:
            if id(endpoint.stats) in seen:
                continue  # its stats object went on in a new endpoint of the same address
            delta = self._delta(endpoint.stats)
            if not delta.empty():
                endpoints.append([endpoint.service.name, endpoint.key, delta.to_json(), None])
            if endpoint.target.in_flight > 0:
                self._leaving.append(endpoint)  # cut requests still end: one report more
            else:
                self._bases.pop(id(endpoint.stats), None)
        live = seen | {id(e.stats) for e in self._leaving}
        self._bases = {k: v for k, v in self._bases.items() if k in live}
        handshakes = {k: n - self._handshakes.get(k, 0) for k, n in router.handshakes.items()}
        self._handshakes = dict(router.handshakes)
        return {
            "t": "stats",
            "version": router.version,
            "connections": len(router.connections),
            "active": router.active,
            "services": services,
            "endpoints": endpoints,
            "tls": {k: n for k, n in handshakes.items() if n},
        }


# -- in the parent -------------------------------------------------------------------------------------------------


@dataclass
class WorkerGauges:
    version: int = -1
    connections: int = 0
    active: int = 0
    queued: dict[str, int] = field(default_factory=dict)
    endpoints: dict[Key, dict[str, Any]] = field(default_factory=dict)


class Merge:
    """Every worker's reports, added up until the control plane takes them."""

    def __init__(self) -> None:
        self.services: dict[str, Tally] = {}
        self.endpoints: dict[Key, Tally] = {}
        self.workers: dict[int, WorkerGauges] = {}
        self.tls: dict[str, int] = {}  # TLS handshakes by outcome (a version, or `failed:<reason>`)

    def add(self, worker: int, report: dict[str, Any]) -> None:
        gauges = WorkerGauges(int(report["version"]), int(report["connections"]), int(report["active"]))
        _add_counts(self.tls, report.get("tls", {}))
        for name, entry in report["services"].items():
            gauges.queued[name] = int(entry["queued"])
            if entry["d"] is not None:
                self.services.setdefault(name, Tally()).add(Tally.from_json(entry["d"]))
        for name, address, delta, state in report["endpoints"]:
            key = (str(name), str(address))
            if delta is not None:
                self.endpoints.setdefault(key, Tally()).add(Tally.from_json(delta))
            if state is not None:
                gauges.endpoints[key] = state
        self.workers[worker] = gauges

    def save(self) -> dict[str, Any]:
        """The sums not yet taken, to carry over an exec of the parent."""
        return {
            "services": {name: tally.to_json() for name, tally in self.services.items()},
            "endpoints": [[s, a, tally.to_json()] for (s, a), tally in self.endpoints.items()],
            "tls": dict(self.tls),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        _add_counts(self.tls, saved.get("tls", {}))
        for name, data in saved["services"].items():
            self.services.setdefault(name, Tally()).add(Tally.from_json(data))
        for name, address, data in saved["endpoints"]:
            self.endpoints.setdefault((name, address), Tally()).add(Tally.from_json(data))

    def forget(self, worker: int) -> None:
        """A worker is gone: its gauges go (its counts so far are in the sums already)."""
        self.workers.pop(worker, None)

    def take(self) -> dict[str, Any]:
        """The sums since the last take, and the gauges of every worker merged; the sums start over."""
        workers = list(self.workers.values())
        queued: dict[str, int] = {}
        merged: dict[Key, dict[str, Any]] = {}
        for gauges in workers:
            for name, count in gauges.queued.items():
                queued[name] = queued.get(name, 0) + count
            for key, state in gauges.endpoints.items():
                merged[key] = _merge_gauges(merged.get(key), state)
        services = {name: tally.to_json() for name, tally in self.services.items()}
        endpoints = [[s, a, self.endpoints[(s, a)].to_json() if (s, a) in self.endpoints else None, merged.get((s, a))]
                     for s, a in sorted(set(self.endpoints) | set(merged))]  # fmt: skip
        self.services, self.endpoints = {}, {}
        tls, self.tls = self.tls, {}
        return {
            "t": "stats",
            "tls": tls,
            "workers": len(workers),
            "versions": sorted({g.version for g in workers}),
            "connections": sum(g.connections for g in workers),
            "active": sum(g.active for g in workers),
            "queued": queued,
            "services": services,
            "endpoints": endpoints,
        }


def _add_counts(into: dict[str, int], counts: dict[str, Any]) -> None:
    for key, count in counts.items():
        into[str(key)] = into.get(str(key), 0) + int(count)


def _merge_gauges(into: dict[str, Any] | None, state: dict[str, Any]) -> dict[str, Any]:
    """Several workers' view of one endpoint: requests in flight add up; it is down, ejected or open if it is so
    in any worker (each worker judges it by what it sees, as nginx's workers do)."""
    if into is None:
        return dict(state)
    merged = dict(into)
    merged["in_flight"] = into["in_flight"] + state["in_flight"]
    for name, worst in (("state", ("down", "draining")),):
        for value in worst:
            if state[name] == value or into[name] == value:
                merged[name] = value
                break
    if BREAKER_RANK.get(state["breaker"], 0) > BREAKER_RANK.get(into["breaker"], 0):
        merged["breaker"] = state["breaker"]
    merged["ejected"] = into["ejected"] or state["ejected"]
    merged["effective_weight"] = min(into["effective_weight"], state["effective_weight"])
    if state["health"] == "down":
        merged["health"] = "down"
    return merged


# -- in the control plane ------------------------------------------------------------------------------------------


@dataclass
class EndpointRecord:
    service: str
    address: str
    totals: Tally = field(default_factory=Tally)
    gauges: dict[str, Any] | None = None  # as last reported (None: never)
    present: bool = False  # in at least one worker now (draining ones included)
    last_seen: float = 0.0


@dataclass
class ServiceRecord:
    totals: Tally = field(default_factory=Tally)
    queued: int = 0


class RouterView:
    """The router as the control plane sees it: totals since this portero started (they never go down) and the
    gauges of the last report, from every worker at once."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceRecord] = {}
        self.endpoints: dict[Key, EndpointRecord] = {}
        self.workers = 0
        self.versions: list[int] = []
        self.connections = 0
        self.active = 0
        self.reports = 0
        self.handshakes: dict[str, int] = {}  # TLS handshakes since this portero started, by outcome

    def apply(self, message: dict[str, Any], now: float) -> None:
        _add_counts(self.handshakes, message.get("tls", {}))
        self.workers = int(message["workers"])
        self.versions = [int(v) for v in message["versions"]]
        self.connections = int(message["connections"])
        self.active = int(message["active"])
        for name, service in self.services.items():
            service.queued = int(message["queued"].get(name, 0))
        for name, data in message["services"].items():
            self.services.setdefault(name, ServiceRecord()).totals.add(Tally.from_json(data))
        for name in message["queued"]:
            self.services.setdefault(name, ServiceRecord()).queued = int(message["queued"][name])
        present: set[Key] = set()
        for name, address, delta, gauges in message["endpoints"]:
            key = (str(name), str(address))
            record = self.endpoints.get(key)
            if record is None:
                record = self.endpoints[key] = EndpointRecord(key[0], key[1])
            if delta is not None:
                record.totals.add(Tally.from_json(delta))
            if gauges is not None:
                record.gauges = gauges
                record.last_seen = now
                present.add(key)
        for key, record in list(self.endpoints.items()):
            record.present = key in present
            if not record.present and now - record.last_seen > RETAIN_S:
                del self.endpoints[key]
        self.reports += 1

    def present(self, service: str, address: str) -> bool:
        """In at least one worker (draining ones included)."""
        record = self.endpoints.get((service, address))
        return record is not None and record.present

    def routed(self, service: str | None = None) -> list[EndpointRecord]:
        """The endpoints in at least one worker now."""
        return [r for r in self.endpoints.values() if r.present and service in (None, r.service)]

    def in_flight(self, service: str) -> int:
        return sum(int(r.gauges["in_flight"]) for r in self.routed(service) if r.gauges is not None)

    def queued(self, service: str) -> int:
        record = self.services.get(service)
        return record.queued if record is not None else 0

    def service_totals(self, service: str) -> Tally:
        record = self.services.get(service)
        return record.totals if record is not None else Tally()


def endpoint_out(record: EndpointRecord) -> dict[str, Any]:
    """One endpoint as the API shows it (`ServerOut`); one that no worker routes any more shows as draining."""
    last = record.gauges or {}
    live = last if record.present else {}
    totals = record.totals
    histogram = totals.histogram()
    return {
        "address": record.address,
        "service": record.service,
        "source": last.get("source", "replica"),
        "replica": last.get("replica") or None,
        "state": live.get("state", "draining"),
        "weight": int(last.get("weight", 0)),
        "effective_weight": float(live.get("effective_weight", 0.0)),
        "health": live.get("health"),
        "breaker": live.get("breaker", "closed"),
        "ejected": bool(live.get("ejected", False)),
        "in_flight": int(live.get("in_flight", 0)),
        "requests": totals.requests,
        "responses": dict(zip(STATUS_CLASSES, totals.responses, strict=True)),
        "faults": dict(zip(FAULTS, totals.faults, strict=True)),
        "errors": totals.errors,
        "retries": totals.retries,
        "ejections": totals.ejections,
        "latency_p50_s": histogram.percentile(50),
        "latency_p95_s": histogram.percentile(95),
        "latency_p99_s": histogram.percentile(99),
    }
