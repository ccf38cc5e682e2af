"""The supervisor's decisions as scripted traces: facts in, actions out, time passed in by hand."""

from __future__ import annotations

import itertools

import pytest

from portero.replicas import Event, Process, Replica, ReplicaState, StopIntent, TransitionError
from portero.runtimes.base import Exit
from portero.spec.models import HealthCheck, RestartPolicy
from portero.supervisor import decide
from portero.supervisor.decide import Desired, Forget, Observed, Plan, Start, Stop

HEALTH = HealthCheck(healthy_threshold=2, unhealthy_threshold=3, start_period_s=10, restart_after_s=30)
RESTART = RestartPolicy(initial_backoff_s=1, max_backoff_s=8, reset_after_s=60)
KILLED = Exit(code=137, signal=9)


class Trace:
    """Holds the replicas between passes, the way the supervisor's shell does."""

    def __init__(self, replicas: int = 2, revision: int = 1) -> None:
        self.now = 1000.0
        self.ids = (f"web-{n}" for n in itertools.count(1))
        self.replicas: list[Replica] = []
        self.want = {"web": Desired("web", revision, replicas, HEALTH, RESTART, stop_grace_s=5)}
        self.plan = Plan([])

    def step(
        self, dt: float = 0.0, exits: dict[str, Exit] | None = None, checks: dict[str, bool] | None = None
    ) -> Plan:
        self.now += dt
        observed = Observed(exits or {}, checks or {})
        self.plan = decide.reconcile(self.replicas, observed, self.want, self.now, lambda s, r: next(self.ids))
        self.replicas = self.plan.replicas
        for action in self.plan.actions:  # the shell starts what it is told to, at once
            if isinstance(action, Start):
                self.replace(decide.started(action.replica, Process("127.0.0.1", 9000, 42, 1.0), self.now))
        return self.plan

    def replace(self, replica: Replica) -> None:
        self.replicas = [replica if r.id == replica.id else r for r in self.replicas]

    def get(self, replica_id: str) -> Replica:
        return next(r for r in self.replicas if r.id == replica_id)

    def states(self) -> dict[str, ReplicaState]:
        return {r.id: r.state for r in self.replicas}

    def kinds(self) -> list[str]:
        return [e.kind for e in self.plan.events]

    def all_ready(self) -> None:
        self.step(0.2, checks={r.id: True for r in self.replicas})
        self.step(0.2, checks={r.id: True for r in self.replicas})
        assert set(self.states().values()) == {ReplicaState.READY}


def test_creates_and_starts_the_desired_count():
    trace = Trace(replicas=3)
    plan = trace.step()
    assert [type(a) for a in plan.actions] == [Start, Start, Start]
    assert trace.kinds() == ["replica.created"] * 3
    assert set(trace.states().values()) == {ReplicaState.STARTING}


def test_ready_only_after_healthy_threshold_passes():
    trace = Trace(replicas=1)
    trace.step()
    trace.step(0.2, checks={"web-1": True})
    assert trace.get("web-1").state is ReplicaState.STARTING
    trace.step(0.2, checks={"web-1": True})
    assert trace.get("web-1").state is ReplicaState.READY
    assert trace.kinds() == ["replica.ready"]
    assert "0.4 s after start" in trace.plan.events[0].message


def test_crash_restarts_with_growing_delays_capped():
    trace = Trace(replicas=1)
    trace.step()
    delays = []
    for _ in range(6):
        trace.step(0.5, exits={"web-1": Exit(code=3)})
        replica = trace.get("web-1")
        assert replica.state is ReplicaState.BACKOFF
        delays.append(replica.backoff_s)
        # no start before the delay is over: not a busy loop
        plan = trace.step(replica.backoff_s - 0.01)
        assert not any(isinstance(a, Start) for a in plan.actions)
        plan = trace.step(0.02)
        assert [type(a) for a in plan.actions] == [Start]
    assert delays == [1, 2, 4, 8, 8, 8]
    assert trace.get("web-1").restarts == 6


def test_backoff_resets_after_a_stable_run():
    trace = Trace(replicas=1)
    trace.step()
    for _ in range(3):
        trace.step(0.5, exits={"web-1": KILLED})
        trace.step(trace.get("web-1").backoff_s)
    assert trace.get("web-1").backoff_s == 4
    trace.step(61, exits={"web-1": KILLED})  # ran longer than reset_after_s
    assert trace.get("web-1").backoff_s == 1
    assert "killed by signal 9 after 61.0 s; restart #4 in 1 s" in trace.plan.events[0].message


def test_a_crash_of_one_replica_leaves_the_others_alone():
    trace = Trace(replicas=3)
    trace.step()
    trace.all_ready()
    plan = trace.step(1, exits={"web-2": KILLED})
    assert plan.actions == []
    assert trace.states() == {"web-1": ReplicaState.READY, "web-2": ReplicaState.BACKOFF, "web-3": ReplicaState.READY}


def test_scale_down_retires_the_least_useful_first():
    trace = Trace(replicas=3)
    trace.step()
    trace.step(0.2, checks={"web-1": True, "web-3": True})
    trace.step(0.2, checks={"web-1": True, "web-3": True})  # web-2 still starting
    trace.want["web"] = Desired("web", 1, 2, HEALTH, RESTART, stop_grace_s=5)
    plan = trace.step(0.1)
    assert [(type(a), getattr(a, "replica", None) and a.replica.id) for a in plan.actions] == [(Stop, "web-2")]
    assert plan.actions[0].grace_s == 5
    assert trace.get("web-2").stop_intent is StopIntent.RETIRE
    plan = trace.step(1, exits={"web-2": Exit(code=0)})
    assert plan.actions == [Forget("web-2")]
    assert set(trace.states()) == {"web-1", "web-3"}


def test_a_new_revision_replaces_the_old_only_as_it_becomes_ready():
    trace = Trace(replicas=2)
    trace.step()
    trace.all_ready()
    trace.want["web"] = Desired("web", 2, 2, HEALTH, RESTART)
    plan = trace.step(1)
    assert [type(a) for a in plan.actions] == [Start, Start]
    assert not any(isinstance(a, Stop) for a in plan.actions)  # nothing old stops before something new is ready
    trace.step(0.2, checks={"web-3": True})
    plan = trace.step(0.2, checks={"web-3": True})
    stops = [a.replica.revision for a in plan.actions if isinstance(a, Stop)]
    assert stops == [1]  # one new ready: one old goes
    trace.step(0.2, checks={"web-4": True})
    plan = trace.step(0.2, checks={"web-4": True})
    assert [a.replica.revision for a in plan.actions if isinstance(a, Stop)] == [1]


def test_a_replica_that_never_passes_within_its_start_period_is_recycled():
    trace = Trace(replicas=1)
    trace.step()
    trace.step(5, checks={"web-1": False})
    assert trace.get("web-1").state is ReplicaState.STARTING
    plan = trace.step(5.1)
    assert [type(a) for a in plan.actions] == [Stop]
    assert trace.get("web-1").stop_intent is StopIntent.RESTART
    trace.step(1, exits={"web-1": Exit(code=143, signal=15)})
    assert trace.get("web-1").state is ReplicaState.BACKOFF


def test_unhealthy_leaves_rotation_after_the_fall_threshold_and_comes_back():
    trace = Trace(replicas=1)
    trace.step()
    trace.all_ready()
    for _ in range(2):
        trace.step(2, checks={"web-1": False})
    assert trace.get("web-1").state is ReplicaState.READY
    trace.step(2, checks={"web-1": False})
    assert trace.get("web-1").state is ReplicaState.UNHEALTHY
    trace.step(2, checks={"web-1": True})
    trace.step(2, checks={"web-1": True})
    assert trace.get("web-1").state is ReplicaState.READY


def test_unhealthy_for_too_long_is_restarted():
    trace = Trace(replicas=1)
    trace.step()
    trace.all_ready()
    for _ in range(3):
        trace.step(2, checks={"web-1": False})
    plan = trace.step(31)
    assert [type(a) for a in plan.actions] == [Stop]
    assert trace.kinds() == ["replica.recycled"]


def test_held_replica_keeps_its_slot_and_is_not_restarted():
    trace = Trace(replicas=2)
    trace.step()
    trace.all_ready()
    held, actions = decide.hold(trace.get("web-1"), grace_s=5)
    trace.replace(held)
    assert [type(a) for a in actions] == [Stop]
    trace.step(1, exits={"web-1": Exit(code=0)})
    assert trace.get("web-1").state is ReplicaState.STOPPED
    plan = trace.step(100)
    assert plan.actions == []  # no replacement, no restart
    trace.replace(decide.release(trace.get("web-1")))
    plan = trace.step(0.1)
    assert [a.replica.id for a in plan.actions if isinstance(a, Start)] == ["web-1"]


def test_removed_service_is_retired():
    trace = Trace(replicas=1)
    trace.step()
    trace.want = {}
    plan = trace.step(1)
    assert [type(a) for a in plan.actions] == [Stop]
    assert plan.actions[0].grace_s == decide.DEFAULT_GRACE_S


def test_start_failure_backs_off_like_a_crash():
    trace = Trace(replicas=1)
    trace.step()
    pending = Replica("web-9", "web", 1)
    failed, event = decide.start_failed(pending, "command not found", RESTART, 5.0, final=True)
    assert failed.state is ReplicaState.BACKOFF
    assert failed.next_start_at == 6.0
    assert "could not start: command not found" in event.message


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (ReplicaState.STOPPED, Event.PASSED_CHECKS),
        (ReplicaState.PENDING, Event.EXITED),
        (ReplicaState.BACKOFF, Event.STARTED),
        (ReplicaState.READY, Event.STARTED),
    ],
)
def test_transitions_outside_the_table_are_refused(state, event):
    with pytest.raises(TransitionError, match=f"event '{event.value}' is not allowed in state '{state.value}'"):
        Replica("web-1", "web", 1, state=state).transition(event)
