"""One step of a deployment, pure: the record and what was observed in, the next record out.

One object per strategy (`STRATEGIES`, keyed by the spec's names: a name without an object is an error, never
a default). Rolling replaces replicas a few at a time (max surge / max unavailable, Kubernetes' arithmetic; old
replicas that are not ready are unavailable already, so they go first). Blue-green brings the new group up at
full size without traffic, switches all traffic at once, keeps the old group for `keep_old_s` so that a failed
analysis can switch back instantly, then stops it. Canary moves traffic in steps, each held for
`canary_pause_s` and gated by analysis.

The gates are shared (`advance`): a new replica that cannot start for good (command not found, image missing)
rolls back at once; a failed analysis rolls back; and a deployment that makes no progress for
`progress_deadline_s` while it waits for new replicas rolls back. Progress (a phase begun, a new replica ready,
a group moved) restarts that deadline, and it does not run during planned pauses, as in Kubernetes and Argo
Rollouts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Protocol

from portero.deploy.model import ANALYSED, WAITING, Deployment, Move, Observation, Phase
from portero.spec.models import DeploySettings, StrategyName


class Strategy(Protocol):
    def begin(self, d: Deployment, settings: DeploySettings, now: float) -> Deployment:
        """The first groups; `d.old_count` is the old revision's count when the deployment starts."""
        ...

    def step(self, d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
        """The next record when no gate failed."""
        ...


class Rolling:
    def begin(self, d: Deployment, settings: DeploySettings, now: float) -> Deployment:
        d = d.move(Move.ROLL, f"rolling {d.replicas} replica(s) to revision {d.to_revision}", now)
        counts = self._counts(d, Observation(ready_new=0, ready_old=d.old_count), settings)
        return dataclasses.replace(d, old_count=counts[0], new_count=counts[1])

    def step(self, d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
        old, new = self._counts(d, seen, settings)
        if (old, new) != (d.old_count, d.new_count):
            d = d.note(
                f"revision {d.to_revision}: {seen.ready_new} ready; old replicas {d.old_count} -> {old}, "
                f"new {d.new_count} -> {new}",
                now,
                old_count=old,
                new_count=new,
            )
        if d.old_count == 0 and seen.ready_new >= d.replicas:
            return succeed(d, now)
        return d

    @staticmethod
    def _counts(d: Deployment, seen: Observation, settings: DeploySettings) -> tuple[int, int]:
        """Never more than n + surge replicas, never fewer than n - unavailable ready. Counts as the supervisor
        will have them: a replica it has not retired yet is not capacity to count twice. An old replica that is
        not ready counts as unavailable already: it goes at once, and a new one takes its place (Kubernetes
        scales unhealthy old replicas down first), so a deploy that fixes a crash-looping revision proceeds."""
        n = d.replicas
        ready_old, ready_new = min(seen.ready_old, d.old_count), min(seen.ready_new, d.new_count)
        removable = max(0, ready_old + ready_new - (n - settings.max_unavailable))
        old = max(0, ready_old - removable)
        new = min(n, max(d.new_count, n + settings.max_surge - old))
        return old, new


class BlueGreen:
    def begin(self, d: Deployment, settings: DeploySettings, now: float) -> Deployment:
        n = d.replicas
        message = f"starting the green group: {n} replica(s) of revision {d.to_revision}"
        return d.note(message, now, phase_started_at=now, progress_at=now, new_count=n, traffic=0.0)

    def step(self, d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
        if d.phase is Phase.STARTING:
            if seen.ready_new < d.replicas:
                return d
            message = (
                f"green group ready ({seen.ready_new}/{d.replicas}); all traffic switched to revision {d.to_revision}"
            )
            return d.move(Move.SWITCH, message, now, traffic=1.0)
        # Switched: the old group waits without traffic while the analysis watches the new one.
        watched = max(settings.keep_old_s, settings.analysis.window_s)
        if now - d.phase_started_at < watched:
            return d
        d = d.note(
            f"revision {d.to_revision} held up for {watched:g} s; stopping revision {d.from_revision}", now, old_count=0
        )
        return succeed(d, now)


class Canary:
    def begin(self, d: Deployment, settings: DeploySettings, now: float) -> Deployment:
        count = _canary_count(d.replicas, settings.canary_steps[0])
        message = f"starting {count} canary replica(s) of revision {d.to_revision}"
        return d.note(message, now, phase_started_at=now, progress_at=now, new_count=count, traffic=0.0)

    def step(self, d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
        steps = settings.canary_steps
        if d.phase is Phase.STARTING:
            if seen.ready_new < d.new_count:
                return d
            message = (
                f"canary step {d.canary_step + 1}/{len(steps)}: {steps[d.canary_step]:g}% of traffic "
                f"to revision {d.to_revision}"
            )
            return d.move(Move.SHIFT, message, now, traffic=steps[d.canary_step] / 100)
        held = now - d.phase_started_at
        verdict = seen.verdict
        if held < settings.canary_pause_s:
            return d
        if verdict is not None and verdict.result == "inconclusive" and held < 2 * settings.canary_pause_s:
            return d  # give it one more pause to gather requests; with none at all, there is nothing to judge
        if d.canary_step + 1 >= len(steps):
            return succeed(d.note(f"revision {d.to_revision} takes all traffic", now, old_count=0, traffic=1.0), now)
        step = d.canary_step + 1
        why = verdict.reason if verdict is not None else "no analysis"
        message = f"canary step {step}/{len(steps)} passed ({why}); {steps[step]:g}% next"
        return d.move(Move.NEXT_STEP, message, now, canary_step=step, new_count=_canary_count(d.replicas, steps[step]))


STRATEGIES: Mapping[StrategyName, Strategy] = {"rolling": Rolling(), "blue-green": BlueGreen(), "canary": Canary()}


def begin(d: Deployment, settings: DeploySettings, now: float) -> Deployment:
    return STRATEGIES[d.strategy].begin(dataclasses.replace(d, progress_at=now), settings, now)


def advance(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> Deployment:
    if d.finished:
        return d
    d = _observed(d, seen, now)
    why = _failed_gate(d, seen, settings, now)
    if why is not None:
        return rollback(d, why, now)
    following = STRATEGIES[d.strategy].step(d, seen, settings, now)
    if (following.new_count, following.old_count) != (d.new_count, d.old_count):
        following = dataclasses.replace(following, progress_at=now)  # a group moved: progress
    return following


def _observed(d: Deployment, seen: Observation, now: float) -> Deployment:
    """Errors counted, and a new replica ready is progress."""
    changes: dict[str, object] = {}
    if seen.errors_new != d.failed_requests:
        changes["failed_requests"] = seen.errors_new
    if seen.ready_new != d.ready_new:
        changes["ready_new"] = seen.ready_new
        if seen.ready_new > d.ready_new:
            changes["progress_at"] = now
    return dataclasses.replace(d, **changes) if changes else d  # type: ignore[arg-type]


def _failed_gate(d: Deployment, seen: Observation, settings: DeploySettings, now: float) -> str | None:
    if seen.unstartable is not None and d.new_count > 0:
        return f"revision {d.to_revision} cannot start: {seen.unstartable}"
    verdict = seen.verdict
    if verdict is not None and verdict.result == "fail" and d.phase in ANALYSED:
        return f"analysis failed: {verdict.reason}"
    deadline = settings.progress_deadline_s
    if d.phase in WAITING and now - d.progress_at > deadline:
        return (
            f"revision {d.to_revision} had {seen.ready_new}/{d.new_count} ready replica(s) after {deadline:g} s "
            "without progress"
        )
    return None


def succeed(d: Deployment, now: float) -> Deployment:
    took = now - d.started_at
    return d.move(
        Move.SUCCEED,
        f"revision {d.to_revision} serves; deployment took {took:.1f} s",
        now,
        old_count=0,
        new_count=d.replicas,
        traffic=None,
    )


def rollback(d: Deployment, reason: str, now: float) -> Deployment:
    """All traffic back to the old revision, the new group stopped; the record says why."""
    message = f"rolled back to revision {d.from_revision}: {reason}"
    return d.move(Move.ROLL_BACK, message, now, traffic=0.0, new_count=0, reason=reason)


def abort(d: Deployment, reason: str, now: float) -> Deployment:
    """Back to the old revision at once (the operator asked, or portero restarted); the record says why."""
    message = f"aborted: {reason}; revision {d.from_revision} serves"
    return d.move(Move.ABORT, message, now, traffic=0.0, new_count=0, reason=reason)


def _canary_count(replicas: int, percent: float) -> int:
    return max(1, min(replicas, math.ceil(replicas * percent / 100)))
