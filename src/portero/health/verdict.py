"""From check results to replica events, HAProxy-style: `healthy_threshold` passes to rise, `unhealthy_threshold`
failures to fall; Kubernetes-style start period and liveness restart. Pure: time comes in as `now`."""

from __future__ import annotations

import dataclasses

from portero.replicas import Event, Replica, ReplicaState
from portero.spec.models import HealthCheck


def record_check(replica: Replica, policy: HealthCheck, now: float, *, ok: bool) -> tuple[Replica, Event | None]:
    """Count one check result; return the updated replica and the event it crosses, if any."""
    # Counters stop at their threshold: a steady replica's record then stays equal and is not rewritten.
    if ok:
        passes = min(replica.passes + 1, policy.healthy_threshold)
        if (passes, 0) != (replica.passes, replica.failures):
            replica = dataclasses.replace(replica, passes=passes, failures=0)
    else:
        failures = min(replica.failures + 1, policy.unhealthy_threshold)
        if (0, failures) != (replica.passes, replica.failures):
            replica = dataclasses.replace(replica, passes=0, failures=failures)
    state = replica.state
    if state in (ReplicaState.STARTING, ReplicaState.UNHEALTHY) and replica.passes >= policy.healthy_threshold:
        return replica, Event.PASSED_CHECKS
    if state is ReplicaState.READY and replica.failures >= policy.unhealthy_threshold:
        return replica, Event.FAILED_CHECKS
    return replica, overdue(replica, policy, now)


def overdue(replica: Replica, policy: HealthCheck, now: float) -> Event | None:
    """A replica that never passes within its start period, or stays unhealthy too long, fails for good."""
    started, unhealthy = replica.started_at, replica.unhealthy_since
    if replica.state is ReplicaState.STARTING and started is not None and now - started > policy.start_period_s:
        return Event.FAILED_CHECKS
    if replica.state is ReplicaState.UNHEALTHY and unhealthy is not None and now - unhealthy > policy.restart_after_s:
        return Event.FAILED_CHECKS
    return None


STARTING_PROBE_S = 0.2  # a starting replica is probed often: readiness should not wait for a full interval


def next_probe_due(replica: Replica, policy: HealthCheck, last_probe_at: float | None) -> float:
    if last_probe_at is None:
        return 0.0
    step = STARTING_PROBE_S if replica.state is ReplicaState.STARTING else policy.interval_s
    return last_probe_at + step
