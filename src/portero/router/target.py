"""One upstream endpoint as the balancers see it: the few numbers they read and update on every pick.

Health, outlier and breaker state live in their own objects (`health`, `outlier`, `breaker`); the data plane keeps
them next to the Target, so this class stays small and a pick touches nothing else.
"""

from __future__ import annotations


class Target:
    __slots__ = ("current", "in_flight", "key", "since", "weight")

    def __init__(self, key: str, weight: int = 1, since: float = 0.0) -> None:
        if weight < 0:
            raise ValueError(f"target {key}: weight must be >= 0, got {weight}")
        self.key = key  # "host:port"
        self.weight = weight  # configured; 0 takes it out of rotation without forgetting it
        self.since = since  # when it last became eligible: slow start ramps from here
        self.current = 0.0  # smooth weighted round robin's running weight
        self.in_flight = 0  # requests sent and not finished: least-requests reads it

    def __repr__(self) -> str:
        return f"Target({self.key!r}, weight={self.weight}, in_flight={self.in_flight})"
