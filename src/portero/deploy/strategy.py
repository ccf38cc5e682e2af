"""One step of a deployment, pure: the record and what was observed in, the next record out.

Rolling replaces replicas a few at a time (max surge / max unavailable, each new one ready before an old one
goes). Blue-green brings the new group up at full size without traffic, switches all traffic at once, keeps the
old group for `keep_old_s` so that a failed analysis can switch back instantly, then stops it. Canary moves
traffic in steps, each held for `canary_pause_s` and gated by analysis. Every strategy gives up when the new
revision is not ready within `progress_deadline_s`, and rolls back when an analysis fails.
"""

from __future__ import annotations

import dataclasses
import math

from portero.deploy.model import Deployment, Observation, Phase, State
from portero.spec.models import DeploySettings


def begin(d: Deployment, settings: DeploySettings, now: float) -> Deployment:
    n = d.replicas
    if d.strategy == "rolling":
        return d.note(
            f"rolling {n} replica(s) to revision {d.to_revision}",
            now,
            phase=Phase.ROLLING,
            phase_started_at=now,
            new_count=min(n, max(1, settings.max_surge)),
            old_count=n,
        )
    if d.strategy == "canary":
        count = _canary_count(n, settings.canary_steps[0])
        return d.note(
            f"starting {count} canary replica(s) of revision {d.to_revision}",
            now,
            phase=Phase.STARTING,
            phase_started_at=now,
            new_count=count,
            old_count=n,
            traffic=0.0,
        )
    return d.note(
        f"starting the green group: {n} replica(s) of revision {d.to_revision}",
        now,
        phase=Phase.STARTING,
        phase_started_at=now,
        new_count=n,
        old_count=n,
        traffic=0.0,
    )


def advance(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
    if d.finished:
        return d
    d = _with_errors(d, seen)
    verdict = seen.verdict
    if verdict is not None and verdict.result == "fail" and d.phase in (Phase.ROLLING, Phase.CANARY, Phase.SWITCHED):
        return rollback(d, f"analysis failed: {verdict.reason}", now)
    if d.strategy == "rolling":
        return _rolling(d, seen, settings, now)
    if d.strategy == "canary":
        return _canary(d, seen, settings, now)
    return _blue_green(d, seen, settings, now)


def rollback(d: Deployment, reason: str, now: float) -> Deployment:
    """All traffic back to the old revision, the new group stopped; the record says why."""
    message = f"rolled back to revision {d.from_revision}: {reason}"
    return d.note(
        message,
        now,
        state=State.ROLLED_BACK,
        phase=Phase.DONE,
        finished_at=now,
        traffic=0.0,
        new_count=0,
        old_count=d.replicas,
        reason=reason,
    )


def _deadline_passed(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> bool:
    return seen.ready_new < d.new_count and now - d.started_at > settings.progress_deadline_s


def _not_ready(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
    why = (
        f"revision {d.to_revision} had {seen.ready_new}/{d.new_count} ready replica(s) after "
        f"{settings.progress_deadline_s:g} s"
    )
    return rollback(d, why, now)


def _rolling(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
    if _deadline_passed(d, seen, settings, now):
        return _not_ready(d, seen, settings, now)
    n = d.replicas
    # Kubernetes' arithmetic: never more than n + surge replicas, never fewer than n - unavailable ready.
    # Counts as the supervisor will have them: a replica it has not retired yet is not capacity to count twice.
    ready_old, ready_new = min(seen.ready_old, d.old_count), min(seen.ready_new, d.new_count)
    removable = ready_old + ready_new - (n - settings.max_unavailable)
    old = max(0, d.old_count - max(0, removable))
    new = min(n, max(d.new_count, n + settings.max_surge - old))
    if (old, new) != (d.old_count, d.new_count):
        d = d.note(
            f"revision {d.to_revision}: {seen.ready_new} ready; old replicas {d.old_count} -> {old}, "
            f"new {d.new_count} -> {new}",
            now,
            old_count=old,
            new_count=new,
        )
    if d.old_count == 0 and seen.ready_new >= n:
        return _succeed(d, now)
    return d


def _blue_green(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
    if d.phase is Phase.STARTING:
        if seen.ready_new >= d.replicas:
            return d.note(
                f"green group ready ({seen.ready_new}/{d.replicas}); all traffic switched to revision {d.to_revision}",
                now,
                phase=Phase.SWITCHED,
                phase_started_at=now,
                traffic=1.0,
            )
        if _deadline_passed(d, seen, settings, now):
            return _not_ready(d, seen, settings, now)
        return d
    # Switched: the old group waits without traffic while the analysis watches the new one.
    watched = max(settings.keep_old_s, settings.analysis.window_s)
    if now - d.phase_started_at >= watched:
        d = d.note(
            f"revision {d.to_revision} held up for {watched:g} s; stopping revision {d.from_revision}", now, old_count=0
        )
        return _succeed(d, now)
    return d


def _canary(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
    steps = settings.canary_steps
    share = steps[d.canary_step] / 100
    if d.phase is Phase.STARTING:
        if seen.ready_new >= d.new_count:
            return d.note(
                f"canary step {d.canary_step + 1}/{len(steps)}: {steps[d.canary_step]:g}% of traffic "
                f"to revision {d.to_revision}",
                now,
                phase=Phase.CANARY,
                phase_started_at=now,
                traffic=share,
            )
        if _deadline_passed(d, seen, settings, now):
            return _not_ready(d, seen, settings, now)
        return d
    held = now - d.phase_started_at
    if held < settings.canary_pause_s:
        return d
    verdict = seen.verdict
    if verdict is not None and verdict.result == "inconclusive" and held < 2 * settings.canary_pause_s:
        return d  # give it one more pause to gather requests; with none at all, there is nothing to judge
    if d.canary_step + 1 < len(steps):
        step = d.canary_step + 1
        count = _canary_count(d.replicas, steps[step])
        why = verdict.reason if verdict is not None else "no analysis"
        return d.note(
            f"canary step {step}/{len(steps)} passed ({why}); {steps[step]:g}% next",
            now,
            canary_step=step,
            phase=Phase.STARTING,
            phase_started_at=now,
            new_count=count,
        )
    return _succeed(d.note(f"revision {d.to_revision} takes all traffic", now, old_count=0, traffic=1.0), now)


def _succeed(d: Deployment, now: float) -> Deployment:
    took = now - d.started_at
    return d.note(
        f"revision {d.to_revision} serves; deployment took {took:.1f} s",
        now,
        state=State.SUCCEEDED,
        phase=Phase.DONE,
        finished_at=now,
        old_count=0,
        new_count=d.replicas,
        traffic=None,
    )


def _canary_count(replicas: int, percent: float) -> int:
    return max(1, min(replicas, math.ceil(replicas * percent / 100)))


def _with_errors(d: Deployment, seen: Observation) -> Deployment:
    return d if seen.errors_new == d.failed_requests else dataclasses.replace(d, failed_requests=seen.errors_new)
