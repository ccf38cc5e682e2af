"""What portero reads from a Swarm node (`docker node inspect`): the address its host-network tasks answer on,
the Engine that runs them, whether tasks can land on it. Pure functions over the Engine's node objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENGINE_LABEL = "portero.engine"  # a node's Engine URL, as a label of its dockerd (`--label`) or of the node
UNSPECIFIED = {"", "0.0.0.0", "::"}


class NodeAddressError(ValueError):
    """A node has no address portero's router could reach."""


def hostname(node: Mapping[str, Any]) -> str:
    return str((node.get("Description") or {}).get("Hostname") or node.get("ID", "?"))


def address(node: Mapping[str, Any]) -> str:
    """Where the node's host-network tasks answer. A manager's is the address it advertises to the swarm
    (`ManagerStatus.Addr`, `host:2377`): its `Status.Addr` can be 0.0.0.0 or 127.0.0.1 (moby #35437, #30119), and
    a task on another manager would then be routed to portero's own loopback. A worker's is `Status.Addr`, the
    address the managers see it connect from."""
    manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
    if manager:
        host = manager.rsplit(":", 1)[0].strip("[]")
        if host not in UNSPECIFIED:
            return host
    status = str((node.get("Status") or {}).get("Addr") or "")
    if status in UNSPECIFIED:
        raise NodeAddressError(
            f"node {hostname(node)} reports no usable address (Status.Addr {status or 'empty'!s}, "
            f"ManagerStatus.Addr {manager or 'none'}): give it one with `docker swarm join --advertise-addr`"
        )
    return status


def engine_url(node: Mapping[str, Any], configured: Mapping[str, str]) -> str | None:
    """The node's Engine: `docker.swarm.engines` by hostname or node ID first, then the node's own label
    `portero.engine` (set with `docker node update --label-add`), then its dockerd's (`dockerd --label`)."""
    for key in (hostname(node), str(node.get("ID", ""))):
        if key in configured:
            return configured[key]
    spec_labels = (node.get("Spec") or {}).get("Labels") or {}
    engine_labels = ((node.get("Description") or {}).get("Engine") or {}).get("Labels") or {}
    found = spec_labels.get(ENGINE_LABEL) or engine_labels.get(ENGINE_LABEL)
    return str(found) if found else None


def schedulable(node: Mapping[str, Any]) -> bool:
    """Whether Swarm may place tasks on it now: ready and active (not drained or paused)."""
    state = (node.get("Status") or {}).get("State")
    availability = (node.get("Spec") or {}).get("Availability")
    return bool(state == "ready" and availability == "active")


def down(node: Mapping[str, Any] | None) -> bool:
    """Whether Swarm counts the node as gone (no heartbeat): its tasks will never report again on their own."""
    return node is None or (node.get("Status") or {}).get("State") in {"down", "disconnected", "unknown"}
