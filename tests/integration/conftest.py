from __future__ import annotations

import pytest

from tests.chromium import CHROMIUM_ARGS
from tests.conftest import require_tool
from tests.integration.portero_cli import Portero


@pytest.fixture
def portero(tmp_path):
    """A portero of the test's own: state directory, spec file and free loopback ports; stopped afterwards."""
    instance = Portero(tmp_path)
    yield instance
    instance.stop()


@pytest.fixture
def browser():
    """Debian's Chromium, driven by Playwright (skips, or fails in CI, without it)."""
    path = require_tool("chromium", "the dashboard's real-browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
