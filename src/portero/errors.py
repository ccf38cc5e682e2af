"""The errors every layer may raise and the API maps to a status: a leaf module, so that raising one imports
nothing else of portero (control, the deployer and the API routes all share them)."""

from __future__ import annotations


class NotFound(LookupError):
    """What a request names does not exist (404)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} named {name!r}")
        self.kind = kind
        self.name = name


class Refused(ValueError):
    """A request that is well-formed but cannot be done in the current state; says what would work (409)."""
