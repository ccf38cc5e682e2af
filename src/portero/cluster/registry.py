"""The shared registry of servers registered by hand, decided purely: what a router must do to match the store,
and what a change message from another portero asks of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (service, address)


@dataclass(frozen=True)
class Register:
    service: str
    address: str
    weight: int


@dataclass(frozen=True)
class Deregister:
    service: str
    address: str


@dataclass(frozen=True)
class Reweight:
    service: str
    address: str
    weight: int


@dataclass(frozen=True)
class Drain:
    service: str
    address: str
    timeout_s: float | None


@dataclass(frozen=True)
class Undrain:
    service: str
    address: str


ServerOp = Register | Deregister | Reweight | Drain | Undrain


def diff(routed: Mapping[Key, int], stored: Mapping[Key, int]) -> list[ServerOp]:
    """From what this router routes (registered, not draining: weight) to what the store holds."""
    ops: list[ServerOp] = [Deregister(*key) for key in sorted(routed.keys() - stored.keys())]
    for key in sorted(stored):
        if key not in routed:
            ops.append(Register(*key, stored[key]))
        elif routed[key] != stored[key]:
            ops.append(Reweight(*key, stored[key]))
    return ops


def from_message(message: Mapping[str, Any]) -> ServerOp | None:
    """A `server` change message as an operation; None for anything else (or a malformed message)."""
    if message.get("kind") != "server":
        return None
    service, address, op = message.get("service"), message.get("address"), message.get("op")
    if not isinstance(service, str) or not isinstance(address, str):
        return None
    weight = message.get("weight")
    if op == "put" and isinstance(weight, int):
        return Register(service, address, weight)
    if op == "delete":
        return Deregister(service, address)
    if op == "weight" and isinstance(weight, int):
        return Reweight(service, address, weight)
    if op == "drain":
        timeout = message.get("timeout_s")
        return Drain(service, address, float(timeout) if isinstance(timeout, int | float) else None)
    if op == "undrain":
        return Undrain(service, address)
    return None
