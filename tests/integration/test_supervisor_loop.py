"""The supervisor's shell against a real process runtime and store: what the pure decisions cannot show."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from portero.replicas import Replica
from portero.runtimes.process import ProcessRuntime
from portero.spec.models import ServiceSpec
from portero.store.sqlite import SqliteStore
from portero.supervisor.decide import Desired
from portero.supervisor.loop import Supervisor

pytestmark = pytest.mark.integration
TINY = Path(__file__).parents[1] / "fixtures" / "tiny_app.py"


@pytest.fixture
async def supervisor(tmp_path):
    store = SqliteStore(tmp_path / "state.db")
    wants: dict[str, Desired] = {}
    sup = Supervisor(ProcessRuntime(tmp_path), store, tmp_path, lambda: wants)
    sup.wanted = wants  # type: ignore[attr-defined]  # what each test sets
    yield sup
    await sup.shutdown()
    await store.close()


async def test_a_replica_of_a_pruned_revision_is_replaced_not_wedged(supervisor):
    spec = ServiceSpec(command=(sys.executable, str(TINY)))
    supervisor.templates[("web", 12)] = spec  # revision 1 is no longer kept
    supervisor.wanted["web"] = Desired("web", 12, 1)
    supervisor.replicas = [Replica("web-1-dead", "web", 1)]  # pending, of the pruned revision
    await supervisor.tick()
    await supervisor.tick()
    assert [r.revision for r in supervisor.replicas] == [12]
    assert supervisor.replicas[0].process is not None  # the current revision's replica started
    kinds = [e.kind for e in await supervisor.store.get_events()]
    assert "replica.removed" in kinds


async def test_a_started_replica_is_saved_before_the_pass_ends(supervisor):
    supervisor.templates[("web", 1)] = ServiceSpec(command=(sys.executable, str(TINY)))
    supervisor.wanted["web"] = Desired("web", 1, 2)
    await supervisor.tick()
    saved = await supervisor.store.load_replicas()
    assert len(saved) == 2
    assert all(r.process is not None for r in saved)


async def test_env_from_host_passes_the_named_variables_and_the_spec_wins(supervisor):
    supervisor.host_env = {"AWS_REGION": "eu-south-2", "DATABASE_URL": "host's", "AWS_SECRET_ACCESS_KEY": "fake"}
    spec = ServiceSpec(
        command=("app",),
        env={"DATABASE_URL": "the spec's"},
        env_from_host=("AWS_REGION", "DATABASE_URL", "NOT_SET_ON_THE_HOST"),
        version="v2",
    )
    launch = supervisor._launch(Replica("web-1-abcd", "web", 1), spec)
    assert launch.env == {"AWS_REGION": "eu-south-2", "DATABASE_URL": "the spec's", "APP_VERSION": "v2"}
