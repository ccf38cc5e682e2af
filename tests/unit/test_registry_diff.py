"""The shared registry's pure half: a resync's operations, and change messages read defensively."""

from __future__ import annotations

from portero.cluster.registry import Deregister, Drain, Register, Reweight, diff, from_message


def test_a_resync_registers_the_missing_deregisters_the_extra_and_reweights_the_changed() -> None:
    routed = {("portal", "127.0.0.1:1"): 10, ("portal", "127.0.0.1:2"): 5, ("api", "127.0.0.1:3"): 1}
    stored = {("portal", "127.0.0.1:1"): 10, ("portal", "127.0.0.1:2"): 50, ("portal", "127.0.0.1:4"): 7}

    assert diff(routed, stored) == [
        Deregister("api", "127.0.0.1:3"),
        Reweight("portal", "127.0.0.1:2", 50),
        Register("portal", "127.0.0.1:4", 7),
    ]
    assert diff(stored, stored) == []


def test_change_messages_become_operations_and_anything_else_is_ignored() -> None:
    base = {"kind": "server", "service": "portal", "address": "127.0.0.1:1", "origin": "x"}

    assert from_message({**base, "op": "put", "weight": 3}) == Register("portal", "127.0.0.1:1", 3)
    assert from_message({**base, "op": "delete"}) == Deregister("portal", "127.0.0.1:1")
    assert from_message({**base, "op": "weight", "weight": 0}) == Reweight("portal", "127.0.0.1:1", 0)
    assert from_message({**base, "op": "drain", "timeout_s": 2}) == Drain("portal", "127.0.0.1:1", 2.0)
    assert from_message({**base, "op": "drain", "timeout_s": None}) == Drain("portal", "127.0.0.1:1", None)
    assert from_message({**base, "op": "put"}) is None  # no weight
    assert from_message({**base, "op": "explode"}) is None
    assert from_message({"kind": "state", "origin": "x"}) is None
    assert from_message({"kind": "server", "op": "delete", "service": 3, "address": "a"}) is None
