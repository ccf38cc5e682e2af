"""Token records shared between porteros on one Redis (cluster/tokens.py): pure parts and the daemon's check."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from portero import tokens
from portero.cluster.tokens import others


def test_the_others_records_are_taken_and_a_malformed_one_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    mine, _ = tokens.create(tmp_path, "admin", "mine")
    theirs, _ = tokens.create(tmp_path, "viewer", "theirs")
    shared = {
        "me": [asdict(mine)],
        "b": [asdict(theirs), {**asdict(theirs), "role": "root"}, {"id": "nope"}],
    }

    assert others(shared, "me") == [theirs]
    assert caplog.text.count("a token record shared by b is refused") == 2


def test_a_shared_record_is_accepted_and_its_removal_refuses_it(tmp_path: Path) -> None:
    here = tokens.TokenSet(tmp_path / tokens.TOKENS_FILE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    record, secret = tokens.create(elsewhere, "viewer", "made-elsewhere")

    assert here.check(secret) is None
    here.shared = others({"b": [asdict(record)]}, "me")
    assert here.check(secret) == record
    here.shared = others({}, "me")
    assert here.check(secret) is None
