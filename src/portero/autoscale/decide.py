"""The autoscaler's decision, pure: `decide(current, signals, policy, history, now) -> Decision`.

Target tracking is Kubernetes' HPA formula, `ceil(current * value / target)` per signal with a tolerance, the
largest count winning; threshold mode is the seed's (CPU above the up threshold adds `step`, below the down
threshold removes it). Stability comes from HPA and Knative: scale-down takes the largest recommendation of a
stabilization window and waits out a cooldown; scale-up is rate limited (double or +4 per period) except in
panic, when a signal at `panic_factor` times its target scales up at once and blocks scale-down for a while.
Every decision carries its reason, also when the formula asked for a change that stability refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from portero.spec.models import ServiceAutoscale


@dataclass(frozen=True)
class Signals:
    """Per-replica averages over the ready replicas, as the loop measured them."""

    ready: int
    cpu_percent: float | None = None
    in_flight: float | None = None  # requests in flight and queued, per ready replica (or in total at zero)
    requests_per_second: float | None = None
    p95_s: float | None = None
    queued: int = 0  # waiting in the router for an endpoint: at zero replicas, the demand that wakes it
    idle_s: float = 0.0  # since the last request
    # Per custom target of the policy (`autoscale.metrics`), in its order: (shown name, per-replica value or None).
    custom: tuple[tuple[str, float | None], ...] = ()


@dataclass(frozen=True)
class Limits:
    min: int
    max: int
    threshold_up: float = 70
    threshold_down: float = 30


@dataclass(frozen=True)
class History:
    recommendations: tuple[tuple[float, int], ...] = ()  # (at, count) within the stabilization window
    samples: tuple[tuple[float, Signals], ...] = ()  # within the stable window, oldest first
    last_change_at: float = -math.inf
    last_up_at: float = -math.inf
    panic_until: float = -math.inf
    rate_base: tuple[float, int] = (-math.inf, 0)  # start of the current rate period and the count then


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    history: History
    raw: int  # what the formula asked for, before stability and limits
    changed: bool = False
    held: bool = False  # the formula asked for a change that stability or limits refused
    inputs: dict[str, float] = field(default_factory=dict)


def decide(
    current: int, signals: Signals, policy: ServiceAutoscale, limits: Limits, history: History, now: float
) -> Decision:
    inputs = _inputs(signals)
    if current == 0:
        return _from_zero(signals, limits, history, now, inputs)
    keep = max(policy.stable_window_s, policy.panic_s)
    samples = (*(s for s in history.samples if now - s[0] < keep), (now, signals))
    ask = _ask(current, samples, signals, policy, limits, history.panic_until, now)
    # Fixed: an empty history (the daemon restarted) let the first low reading scale down at once. As HPA does,
    # a new window starts with the current count in it.
    seen = history.recommendations or ((now, current),)
    recs = (*((at, n) for at, n in seen if now - at < policy.stabilization_s), (now, ask.raw))
    history = replace(history, samples=samples, recommendations=recs, panic_until=ask.panic_until)
    desired, held_by = _stabilized(current, ask, policy, history, now)
    bounded = min(max(desired, limits.min), limits.max)
    if bounded != desired:
        held_by = held_by or f"limits {limits.min}..{limits.max}"
        desired = bounded
    return _decision(current, desired, held_by, ask, policy, history, now, inputs)


@dataclass(frozen=True)
class _Ask:
    """What the formula asks for, before stability and limits."""

    raw: int
    why: str
    panic_until: float
    in_panic: bool
    idle: bool  # no request for `idle_to_zero_s`: zero is asked for


def _ask(
    current: int,
    samples: tuple[tuple[float, Signals], ...],
    signals: Signals,
    policy: ServiceAutoscale,
    limits: Limits,
    panic_until: float,
    now: float,
) -> _Ask:
    stable = _average(samples, now, policy.stable_window_s, signals)
    recent = _average(samples, now, policy.panic_s, signals)
    raw, why, _ = _recommend(current, stable, policy, limits)
    quick, quick_why, burst = _recommend(current, recent, policy, limits)
    panic_until = now + policy.panic_s if burst else panic_until
    in_panic = now < panic_until
    # Fixed, with the averages as totals (`_average`): the panic window's count was used only on a tick whose own
    # reading was a burst, and the first panic step diluted the next reading under `panic_factor`: a burst needing
    # 10 took 2 to 5 at once and 10 only some 30 s later. As in Knative, panic follows the panic window throughout.
    if in_panic and quick > raw:
        raw, why = quick, f"burst: {quick_why}"
    if limits.min == 0 and signals.idle_s >= policy.idle_to_zero_s and signals.queued == 0:
        why = f"no request for {signals.idle_s:.0f} s >= {policy.idle_to_zero_s:g} s"
        return _Ask(0, why, panic_until, in_panic, idle=True)
    # Fixed: a zero load (or a threshold step) recommended 0, which took a `min: 0` service to zero one
    # stabilization window after the last request, whatever `idle_to_zero_s` said. Only idleness says zero.
    return _Ask(max(raw, 1), why, panic_until, in_panic, idle=False)


def _stabilized(current: int, ask: _Ask, policy: ServiceAutoscale, history: History, now: float) -> tuple[int, str]:
    """The count stability allows, and what held it back ("" when nothing did)."""
    if ask.raw > current:
        return _scale_up(current, ask.raw, policy, history, now, in_panic=ask.in_panic)
    if ask.raw == current:
        return current, ""
    highest = max(n for _, n in history.recommendations)
    if ask.in_panic:
        return current, "panic blocks scale-down"
    if now - history.last_change_at < policy.scale_down_cooldown_s:
        return current, f"scale-down cooldown ({policy.scale_down_cooldown_s:g} s)"
    if ask.idle:
        return 0, ""  # `idle_to_zero_s` without a request was the stabilization
    if highest >= current:
        return current, f"largest recommendation of the last {policy.stabilization_s:g} s is {highest}"
    return highest, ""


def _decision(
    current: int,
    desired: int,
    held_by: str,
    ask: _Ask,
    policy: ServiceAutoscale,
    history: History,
    now: float,
    inputs: dict[str, float],
) -> Decision:
    why, raw = ask.why, ask.raw
    if desired == current:
        held = bool(held_by) and raw != current
        reason = f"{why}; held at {current}: {held_by}" if held else f"{why}: stay at {current}"
        return Decision(desired, reason, history, raw, changed=False, held=held, inputs=inputs)
    up = desired > current
    reason = f"{why}: {current} → {desired}" + (" (panic)" if ask.in_panic and up else "")
    reason += f" ({held_by})" if held_by else ""  # Fixed: a change cut short by a rate limit or limits said not why
    if up and history.rate_base[0] + policy.rate_period_s <= now:
        history = replace(history, rate_base=(now, current))
    history = replace(history, last_change_at=now, last_up_at=now if up else history.last_up_at)
    return Decision(desired, reason, history, raw, changed=True, held=False, inputs=inputs)


def _from_zero(signals: Signals, limits: Limits, history: History, now: float, inputs: dict[str, float]) -> Decision:
    """At zero, any waiting request asks for replicas at once: the user waits for a cold start, not an error.

    The signals from before the service went to zero say nothing about the load that wakes it: the window starts
    afresh at the wake-up, with its own reading in it. Fixed: the readings of the load before an idle period
    stayed in the window (60 s by default) and took a service woken by one request from 1 to 3 at its next pass.
    """
    if signals.queued > 0 or (signals.in_flight or 0) > 0:
        desired = min(max(1, limits.min, min(limits.max, signals.queued)), limits.max)
        reason = f"{signals.queued} request(s) waiting at zero replicas: 0 → {desired}"
    else:
        desired = min(max(0, limits.min), limits.max)
        reason = "no request: stay at zero" if desired == 0 else f"min is {desired}: 0 → {desired}"
    if desired == 0:
        history = replace(history, samples=(), recommendations=())
        return Decision(0, reason, history, 0, changed=False, held=False, inputs=inputs)
    woken = History(samples=((now, signals),), last_change_at=now, last_up_at=now, rate_base=(now, 0))
    return Decision(desired, reason, woken, desired, changed=True, held=False, inputs=inputs)


def _recommend(current: int, signals: Signals, policy: ServiceAutoscale, limits: Limits) -> tuple[int, str, bool]:
    """The formula's count, why, and whether some signal is a burst."""
    if policy.mode == "threshold":
        cpu = signals.cpu_percent
        if cpu is None:
            return current, "no CPU reading", False
        if cpu > limits.threshold_up:
            return current + policy.step, f"cpu {cpu:.0f}% > {limits.threshold_up:g}%", False
        if cpu < limits.threshold_down:
            return current - policy.step, f"cpu {cpu:.0f}% < {limits.threshold_down:g}%", False
        return current, f"cpu {cpu:.0f}% within {limits.threshold_down:g}..{limits.threshold_up:g}%", False
    # HPA counts the replicas that were measured; not-ready ones are left out (they would dilute a scale-up).
    base = max(signals.ready, 1) if signals.ready else current
    best, why, burst = 0, "", False
    for name, value, target, unit in _targets(signals, policy):
        ratio = value / target
        wanted = current if abs(ratio - 1) <= policy.tolerance else math.ceil(base * ratio)
        # Fixed: with replicas not ready, a load at or above target asked for fewer replicas (the ready count, or
        # ceil(ready * ratio)); as in HPA, a signal above its target never recommends scaling down.
        wanted = max(wanted, current) if ratio > 1 else wanted
        burst = burst or ratio >= policy.panic_factor
        if wanted > best or not why:
            best, why = wanted, f"{name} {value:.3g}{unit} vs target {target:g}{unit}"
    if not why:
        return current, "no signal", False
    return best, why, burst


def _targets(signals: Signals, policy: ServiceAutoscale) -> list[tuple[str, float, float, str]]:
    pairs = [
        ("cpu", signals.cpu_percent, policy.cpu_percent, "%"),
        ("in-flight", signals.in_flight, policy.in_flight, ""),
        ("rps", signals.requests_per_second, policy.requests_per_second, "/s"),
        ("p95", signals.p95_s, policy.p95_s, " s"),
    ]
    pairs += [(name, value, t.target, "") for (name, value), t in zip(signals.custom, policy.metrics, strict=False)]
    return [(name, value, target, unit) for name, value, target, unit in pairs if value is not None and target]


def _scale_up(
    current: int, raw: int, policy: ServiceAutoscale, history: History, now: float, *, in_panic: bool
) -> tuple[int, str]:
    if in_panic:
        return raw, ""
    if now - history.last_change_at < policy.scale_up_cooldown_s:
        return current, f"scale-up cooldown ({policy.scale_up_cooldown_s:g} s)"
    start, base = history.rate_base
    base = base if now - start < policy.rate_period_s else current
    ceiling = max(base * 2, base + policy.rate_max_add)
    if raw > ceiling:
        return max(current, ceiling), f"rate limit: at most {ceiling} within {policy.rate_period_s:g} s"
    return raw, ""


def _average(samples: tuple[tuple[float, Signals], ...], now: float, window_s: float, last: Signals) -> Signals:
    """Each signal's mean over the window (missing readings left out); counts are the latest.

    Load signals are averaged as totals (per-replica value x ready replicas then) and divided by the replicas ready
    now. Fixed: averaging the per-replica values themselves kept the readings from before a scale-up in the mean,
    multiplied them by the new count, and compounded: a load needing 3 replicas took 1 to 5, one needing 8 took 4
    to 16, one needing 10 took 1 to 100, and the stabilization window then held the excess. The loop divides by
    `max(ready, 1)` too. p95 latency is not additive: a plain mean.
    """
    chosen = [s for at, s in samples if now - at < window_s] or [last]

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return sum(present) / len(present) if present else None

    def load(value: float | None, s: Signals) -> float | None:
        return None if value is None else value * max(s.ready, 1) / max(last.ready, 1)

    return replace(
        last,
        cpu_percent=mean([load(s.cpu_percent, s) for s in chosen]),
        in_flight=mean([load(s.in_flight, s) for s in chosen]),
        requests_per_second=mean([load(s.requests_per_second, s) for s in chosen]),
        p95_s=mean([s.p95_s for s in chosen]),
        custom=tuple((name, mean([load(dict(s.custom).get(name), s) for s in chosen])) for name, _ in last.custom),
    )


def _inputs(signals: Signals) -> dict[str, float]:
    values = {
        "ready": signals.ready,
        "cpu_percent": signals.cpu_percent,
        "in_flight": signals.in_flight,
        "requests_per_second": signals.requests_per_second,
        "p95_s": signals.p95_s,
        "queued": signals.queued,
        "idle_s": signals.idle_s,
    }
    values.update(dict(signals.custom))
    return {k: round(float(v), 3) for k, v in values.items() if v is not None}
