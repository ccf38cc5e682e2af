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
    sup = Supervisor(ProcessRuntime(tmp_path), store, tmp_path)
    yield sup
    await sup.shutdown()
    await store.close()


async def test_a_replica_of_a_pruned_revision_is_replaced_not_wedged(supervisor):
    spec = ServiceSpec(command=(sys.executable, str(TINY)))
    supervisor.templates[("web", 12)] = spec  # revision 1 is no longer kept
    supervisor.desired = {"web": Desired("web", 12, 1)}
    supervisor.replicas = [Replica("web-1-dead", "web", 1)]  # pending, of the pruned revision
    await supervisor.tick()
    await supervisor.tick()
    assert [r.revision for r in supervisor.replicas] == [12]
    assert supervisor.replicas[0].process is not None  # the current revision's replica started
    kinds = [e.kind for e in await supervisor.store.get_events()]
    assert "replica.removed" in kinds


async def test_a_started_replica_is_saved_before_the_pass_ends(supervisor):
    supervisor.templates[("web", 1)] = ServiceSpec(command=(sys.executable, str(TINY)))
    supervisor.desired = {"web": Desired("web", 1, 2)}
    await supervisor.tick()
    saved = await supervisor.store.load_replicas()
    assert len(saved) == 2
    assert all(r.process is not None for r in saved)
