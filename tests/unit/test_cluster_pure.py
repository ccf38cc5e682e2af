"""The cluster's pure helpers: a registry resync's operations, change messages read defensively, and the
per-portero part of a shared spec."""

from __future__ import annotations

from portero.cluster.local import local
from portero.cluster.registry import Deregister, Drain, Register, Reweight, diff, from_message
from portero.spec.models import Spec


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


def test_a_shared_spec_keeps_each_portero_s_own_listeners_and_store() -> None:
    services = {"portal": {"command": ["run"], "replicas": {"initial": 3}}}
    shared = Spec.model_validate(
        {"admin": {"port": 9900}, "router": {"port": 8000, "drain_timeout_s": 7}, "services": services}, strict=False
    )
    mine = Spec.model_validate(
        {
            "admin": {"port": 9901},
            "router": {"port": 8001},
            "store": {"redis_prefix": "mine"},
            "services": {"other": {"command": ["x"]}},
        },
        strict=False,
    )

    merged = local(shared, mine)

    assert merged.admin.port == 9901
    assert merged.router.port == 8001
    assert merged.router.drain_timeout_s == 7  # shared
    assert merged.store.redis_prefix == "mine"
    assert list(merged.services) == ["portal"]  # shared


def test_a_shared_spec_keeps_each_portero_s_own_https_listener_and_shares_its_certificates() -> None:
    services = {"portal": {"command": ["run"]}}
    acme = {"directory_url": "https://ca.example/dir", "hosts": ["portal.example"]}
    shared = Spec.model_validate(
        {"router": {"port": 8000, "tls": {"port": 8443, "public_port": 443, "acme": acme}}, "services": services},
        strict=False,
    )
    mine = Spec.model_validate(
        {"router": {"port": 8001, "tls": {"port": 8444, "acme": acme}}, "services": services}, strict=False
    )

    merged = local(shared, mine)

    assert merged.router.tls is not None
    assert (merged.router.tls.port, merged.router.tls.public_port) == (8444, None)
    assert merged.router.tls.acme == shared.router.tls.acme  # type: ignore[union-attr]
