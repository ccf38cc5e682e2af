from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ALL = os.environ.get("PORTERO_REQUIRE_ALL") == "1"


def require_tool(name: str, why: str) -> str:
    """Path of a system tool; skip (or fail in CI, where PORTERO_REQUIRE_ALL=1) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({why}); `make provision` as root installs it"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)
    return path
