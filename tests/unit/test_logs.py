"""Following logs: lines as they come, across rotation (seen by inode) and truncation, and new sources."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portero import logs
from portero.logs import Cursor, LogSource, read_new


def line(text: str, stream: str = "stdout") -> str:
    return f"2026-01-01T00:00:00.000Z {stream} {text}\n"


def test_a_rotation_is_seen_by_inode_even_when_the_new_file_is_already_longer(tmp_path: Path):
    path = tmp_path / "replica.log"
    path.write_text(line("one"))
    cursor = Cursor.at_end(path)
    with path.open("a") as handle:
        handle.write(line("two"))
    path.rename(tmp_path / "replica.log.1")  # what RotatingFileHandler does
    path.write_text(line("three") + line("four, a longer line than the old file had, so size alone would miss it"))
    got = read_new(path, cursor)
    assert [raw.split(" ", 2)[2] for raw in got][:2] == ["two", "three"]
    assert len(got) == 3
    assert read_new(path, cursor) == []


def test_half_lines_wait_and_truncation_starts_over(tmp_path: Path):
    path = tmp_path / "replica.log"
    path.write_text("")
    cursor = Cursor.at_end(path)
    with path.open("a") as handle:
        handle.write(line("whole") + "2026-01-01T00:00:00.000Z stdout ha")
    assert [r.split(" ", 2)[2] for r in read_new(path, cursor)] == ["whole"]
    with path.open("a") as handle:
        handle.write("lf\n")
    assert [r.split(" ", 2)[2] for r in read_new(path, cursor)] == ["half"]
    path.write_text(line("x"))  # truncated in place (copytruncate)
    assert [r.split(" ", 2)[2] for r in read_new(path, cursor)] == ["x"]


async def test_follow_picks_up_sources_that_appear_later(tmp_path: Path):
    first = LogSource("portal", "portal-1-aaaa", tmp_path / "a.log")
    first.path.write_text(line("old, before the follow began"))
    sources = [first]
    later = LogSource("portal", "portal-1-bbbb", tmp_path / "b.log")

    async def scenario() -> list[tuple[str, str]]:
        seen = []
        stream = logs.follow(lambda: list(sources), grep=None, poll_s=0.01)
        await asyncio.sleep(0)
        with first.path.open("a") as handle:
            handle.write(line("new in a"))
        seen.append(await anext(stream))
        later.path.write_text(line("first line of b"))
        sources.append(later)
        seen.append(await anext(stream))
        await stream.aclose()
        return [(x.replica, x.text) for x in seen]

    got = await asyncio.wait_for(scenario(), 5)
    assert got == [("portal-1-aaaa", "new in a"), ("portal-1-bbbb", "first line of b")]


# -- reading backwards, and a search that looks at a block's bytes before its lines ----------------------------------

TEXTS = st.lists(st.text(alphabet="ab\u00e9\r\x85 ", max_size=12), max_size=40)


def reference(texts: list[str], grep: str | None, limit: int) -> list[str]:
    return [t for t in texts if grep is None or grep in t][-limit:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=TEXTS,
    grep=st.none() | st.text(alphabet="ab\u00e9 ", min_size=1, max_size=3),
    limit=st.integers(1, 50),
    block=st.integers(1, 64),
    split=st.integers(0, 40),
)
def test_a_read_returns_the_last_matching_lines_whatever_the_blocks_and_rotation(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    texts: list[str],
    grep: str | None,
    limit: int,
    block: int,
    split: int,
) -> None:
    monkeypatch.setattr(logs, "BACKWARDS_BLOCK", block)
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "replica.log"
    cut = min(split, len(texts))
    (folder / "replica.log.1").write_text("".join(line(t) for t in texts[:cut]), encoding="utf-8")
    path.write_text("".join(line(t) for t in texts[cut:]), encoding="utf-8")
    found = logs.read([LogSource("web", "web-1", path)], None, grep, limit, health=True)
    assert [f.text for f in found] == reference(texts, grep, limit)


def test_a_search_for_a_line_across_two_blocks_finds_it_and_an_undecodable_byte_is_searched_as_u_fffd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "BACKWARDS_BLOCK", 16)
    path = tmp_path / "replica.log"
    path.write_bytes(line("x" * 30 + "needle" + "y" * 30).encode() + line("bad \xff byte").encode("latin-1"))
    source = LogSource("web", "web-1", path)
    assert [f.text for f in logs.read([source], None, "needle", 10)] == ["x" * 30 + "needle" + "y" * 30]
    assert [f.text for f in logs.read([source], None, "\ufffd", 10)] == ["bad \ufffd byte"]
    assert logs.read([source], None, "absent", 10) == []


def test_the_body_of_a_read_is_what_the_schema_says() -> None:
    from portero.api.logs import _encoded
    from portero.api.schemas import LogLineOut, LogsOut

    found = [
        logs.LogLine(1.5, "web", "web-1", "stdout", 'caf\u00e9 \u2028 "q" \\'),
        logs.LogLine(2, "w", "w-2", "stderr", ""),
    ]
    expected = LogsOut(lines=[LogLineOut(**vars(line)) for line in found]).model_dump_json().encode()
    assert _encoded(found) == expected
