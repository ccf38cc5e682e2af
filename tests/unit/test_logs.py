"""Following logs: lines as they come, across rotation (seen by inode) and truncation, and new sources."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
