from __future__ import annotations

import pytest

from tests.integration.portero_cli import Portero


@pytest.fixture
def portero(tmp_path):
    """A portero of the test's own: state directory, spec file and free loopback ports; stopped afterwards."""
    instance = Portero(tmp_path)
    yield instance
    instance.stop()
