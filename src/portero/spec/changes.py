"""What an applied spec changes, field by field, and how each change takes effect. Pure.

`portero apply` prints one line per changed field: its path, the old and the new value, and how it took effect
(`kubectl apply` says only "configured"; an operator wants to know whether a change needs anything else).
Fields that portero reads only at its start cannot change live: `refusals` names them with what to do, and the
whole spec is refused before anything changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from portero.spec.models import Spec

TEMPLATE = "a new revision"  # a change of a service's template: the deployment that carries it says more
RESTART = "needs a restart of portero (portero down, then portero up)"
# Read once, at portero's start: a change is refused with this advice. Longest prefix first.
FIXED: tuple[tuple[str, str], ...] = (
    ("runtime", RESTART),
    ("admin.", RESTART),
    ("store.", RESTART),
    ("process.", RESTART),
    ("docker.", RESTART),
    ("router.enabled", RESTART),
    ("monitoring.series.", RESTART + " (the series' memory is laid out at start)"),
)
# How a live change takes effect, by path prefix (services.NAME. is cut off first). Longest prefix first.
EFFECTS: tuple[tuple[str, str], ...] = (
    ("router.port", "the router listens there now, hitless (connections on the old port finish)"),
    ("router.host", "the router listens there now, hitless (connections on the old port finish)"),
    ("router.workers", "the router's workers were replaced, hitless"),
    ("router.", "every router worker routes by it now"),
    ("monitoring.", "from the monitor's next pass"),
    ("autoscale.", "from the autoscaler's next pass"),
    ("alerts.", "from the monitor's next pass (rules and receivers)"),
    ("deploy.", "from the next deployment"),
    ("service.replicas.", "the supervisor keeps the new count"),
    ("service.health.", "from the supervisor's next pass"),
    ("service.restart.", "from the next restart"),
    ("service.stop_grace_s", "from the next stop"),
    ("service.autoscale.", "from the autoscaler's next pass"),
    ("service.deploy.", "from the next deployment"),
    ("service.balance.", "every router worker routes by it now"),
    ("service.endpoints", "every router worker routes by it now"),
    ("service.metrics", "from the monitor's next pass"),
    ("service.", TEMPLATE),  # the template (command, image, version, env...): deployed by its strategy
)
SHOWN_CHARS = 60


@dataclass(frozen=True)
class Change:
    path: str  # e.g. "router.port", "services.portal.version", "services.api" (added or removed)
    old: Any  # None: added
    new: Any  # None: removed

    @property
    def service(self) -> str | None:
        return self.path.split(".")[1] if self.path.startswith("services.") else None

    def text(self) -> str:
        if self.old is None:
            return f"{self.path}: added"
        if self.new is None:
            return f"{self.path}: removed"
        return f"{self.path}: {_shown(self.old)} -> {_shown(self.new)}"


def changes(old: Spec, new: Spec) -> list[Change]:
    """Every leaf that differs; a service added or removed is one change."""
    return list(_diff("", old.model_dump(mode="json"), new.model_dump(mode="json")))


def _diff(path: str, old: Any, new: Any) -> Any:
    if _items(old) and _items(new):  # alert rules, webhooks, endpoints: item by item, as a dict by its name
        yield from _diff(path, _by_name(old), _by_name(new))
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=lambda k: (k not in old, k)):
            here = f"{path}{key}" if key.startswith("[") else f"{path}.{key}" if path else str(key)
            if key not in old:
                yield Change(here, None, new[key])
            elif key not in new:
                yield Change(here, old[key], None)
            else:
                yield from _diff(here, old[key], new[key])
    elif old != new:
        yield Change(path, old, new)


def _items(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _by_name(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`[name]` for an item with a name (a rule's threshold changed is `alerts.rules[high-5xx].threshold`), else
    `[N]`, its position from 1 (as an unnamed webhook is `webhook-N`)."""
    named = [item.get("name") for item in items]
    if all(isinstance(name, str) for name in named) and len(set(named)) == len(named):
        return {f"[{name}]": item for name, item in zip(named, items, strict=True)}
    return {f"[{i}]": item for i, item in enumerate(items, 1)}


def refusal(change: Change) -> str | None:
    """What to do instead, for a field that cannot change while portero runs."""
    return _lookup(FIXED, change.path)


def effect(change: Change) -> str:
    """How a live change took effect (a service's template: the caller says which deployment carries it)."""
    path = change.path
    if change.service is not None:
        if path == f"services.{change.service}" and (change.old is None or change.new is None):
            return "its replicas start" if change.old is None else "its replicas stop"
        path = "service." + path.split(".", 2)[2]
    return _lookup(EFFECTS, path) or "takes effect now"


def _lookup(table: tuple[tuple[str, str], ...], path: str) -> str | None:
    return next((text for prefix, text in table if path == prefix.rstrip(".") or path.startswith(prefix)), None)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
