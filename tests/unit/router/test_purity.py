"""The router's decision modules are pure: no clock, no I/O, no event loop, no logging, no module-level randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROUTER = Path(__file__).parents[3] / "src" / "portero" / "router"
DECISIONS = ["target", "balancer", "health", "outlier", "breaker", "budget", "stats"]
FORBIDDEN = {"asyncio", "time", "random", "logging", "socket", "subprocess", "os", "threading", "uvloop", "httptools"}


@pytest.mark.parametrize("module", DECISIONS)
def test_decision_modules_take_time_and_randomness_as_arguments(module):
    tree = ast.parse((ROUTER / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    assert not found & FORBIDDEN, f"router/{module}.py imports {found & FORBIDDEN}"
