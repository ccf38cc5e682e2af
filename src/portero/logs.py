"""Reading replica logs: the shim writes `<ISO time> <stream> <text>` lines; here they are parsed, merged,
filtered and followed. Rotated files are read oldest first, and memory stays bounded by `limit`.

Retention is bounded by size, per replica: the shim rotates `replica.log` at `log_max_bytes` (10 MiB) and keeps
3 older files, so a replica never holds more than 40 MiB of logs. A replica's logs live as long as its record:
a crashed replica is restarted under the same id and keeps them; a retired one (scaled down, replaced by a
new revision) is forgotten with its folder.

Health checks' requests are left out unless asked for: portero's checks send the User-Agent `portero-health/…`,
and a line that names it is one an access log wrote for a check."""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from portero import lowpriority
from portero.health import USER_AGENT_MARK

LINE = re.compile(r"^(?P<at>\d{4}-\d\d-\d\dT[\d:.]+Z) (?P<stream>stdout|stderr|portero) (?P<text>.*)$")
FOLLOW_POLL_S = 0.2
READ_MAX_BYTES = 1 << 20  # read per file and poll when following; a follower far behind catches up in steps


@dataclass(frozen=True)
class LogLine:
    at: float
    service: str
    replica: str
    stream: str
    text: str


@dataclass(frozen=True)
class LogSource:
    service: str
    replica: str
    path: Path


def parse(raw: str, source: LogSource) -> LogLine | None:
    match = LINE.match(raw)
    if match is None:
        return None
    at = datetime.fromisoformat(match["at"].replace("Z", "+00:00")).timestamp()
    return LogLine(at, source.service, source.replica, match["stream"], match["text"])


def _files(path: Path) -> list[Path]:
    rotated = sorted(
        path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0
    )
    return [p for p in rotated if p.suffix[1:].isdigit()] + [path]


def read(
    sources: Iterable[LogSource], since: float | None, grep: str | None, limit: int, *, health: bool = False
) -> list[LogLine]:
    """The last `limit` matching lines of all sources, in time order; with `health`, health checks' lines too.
    Each file is read backwards from its end and only as far as needed (`limit` lines, or the first line older
    than `since`): the last 200 lines of a replica with 40 MB of logs cost what 200 lines cost (it read all
    40 MB, 5-7 s, before). A search that finds little still reads everything, but looks for its text in each
    64 KiB block's bytes before splitting or parsing a line of it: 40 MB without a match cost 1.11 s of CPU parsed
    line by line, 0.02 s so. A line ends at "\n" only: a "\r" or "\x85" inside one is the app's, not a new line."""
    # Undecodable bytes read as U+FFFD, which the raw bytes do not hold: such a search parses every line.
    needle = grep.encode() if grep and "\ufffd" not in grep else None
    lines: list[LogLine] = []
    for source in sources:
        kept: list[LogLine] = []
        for raw in _backwards(source.path, needle):
            line = parse(raw, source)
            if line is None:
                continue
            if since is not None and line.at < since:
                break  # a replica's lines are in time order: the rest is older still
            if _wanted(line, None, grep, health=health):
                kept.append(line)
                if len(kept) >= limit:
                    break
        lines.extend(reversed(kept))
    lines.sort(key=lambda line: line.at)
    return lines[-limit:]


BACKWARDS_BLOCK = 64 * 1024
BACKWARDS_LINE_MAX = 1 << 20  # a "line" longer than this (the shim splits at 64 KiB) is cut: memory stays bounded


def _backwards(path: Path, needle: bytes | None = None) -> Iterator[str]:
    """The lines of a replica's log, newest first, rotated files after the current one; with `needle`, only
    lines that hold it (and maybe others: the caller still checks)."""
    for file in reversed(_files(path)):
        try:
            handle = file.open("rb")
        except FileNotFoundError:
            continue
        with handle:
            yield from _lines_backwards(handle, needle)


def _lines_backwards(handle: BinaryIO, needle: bytes | None = None) -> Iterator[str]:
    position = handle.seek(0, os.SEEK_END)
    rest = b""
    while position > 0:
        step = min(BACKWARDS_BLOCK, position)
        position -= step
        handle.seek(position)
        block = handle.read(step) + rest
        cut = block.find(b"\n")  # before it: the end of a line that began in an earlier block
        rest = (block if cut < 0 else block[:cut])[-BACKWARDS_LINE_MAX:]
        if cut < 0 or (needle is not None and needle not in block[cut + 1 :]):
            continue
        for part in reversed(block[cut + 1 :].split(b"\n")):
            if part and (needle is None or needle in part):
                yield part.decode("utf-8", "replace")
    if rest and (needle is None or needle in rest):
        yield rest.decode("utf-8", "replace")


def _wanted(line: LogLine, since: float | None, grep: str | None, *, health: bool) -> bool:
    return (
        (since is None or line.at >= since)
        and (grep is None or grep in line.text)
        and (health or USER_AGENT_MARK not in line.text)
    )


@dataclass
class Cursor:
    """Where following one file stands: the file (by inode, so a rotation is seen even when the new file has
    already grown past the old offset) and the offset of the first byte not yet read."""

    inode: int | None
    offset: int

    @classmethod
    def at_end(cls, path: Path) -> Cursor:
        try:
            status = path.stat()
        except FileNotFoundError:
            return cls(None, 0)  # not written yet: everything it gets is new
        return cls(status.st_ino, status.st_size)


def follow(
    sources: Callable[[], Iterable[LogSource]],
    grep: str | None,
    poll_s: float = FOLLOW_POLL_S,
    *,
    health: bool = False,
) -> AsyncIterator[LogLine]:
    """New lines as they are written, from the current end of each file (taken now, at the call, not at the first
    iteration: nothing written meanwhile is lost). `sources` is asked again on every poll, so replicas that
    appear later (scaled up, replaced by a deployment) are followed from their first line; files are followed
    across rotation (by inode) and truncation."""
    cursors = {source: Cursor.at_end(source.path) for source in sources()}
    return _follow(sources, cursors, grep, poll_s, health=health)


async def _follow(
    sources: Callable[[], Iterable[LogSource]],
    cursors: dict[LogSource, Cursor],
    grep: str | None,
    poll_s: float,
    *,
    health: bool,
) -> AsyncIterator[LogLine]:
    while True:
        cursors = {source: cursors.get(source) or Cursor(None, 0) for source in sources()}  # gone ones dropped
        for line in await lowpriority.run(functools.partial(_read_new_lines, cursors, grep, health=health)):
            yield line
        await asyncio.sleep(poll_s)


def _read_new_lines(cursors: dict[LogSource, Cursor], grep: str | None, *, health: bool) -> list[LogLine]:
    lines = [parse(raw, source) for source, cursor in cursors.items() for raw in read_new(source.path, cursor)]
    return [line for line in lines if line is not None and _wanted(line, None, grep, health=health)]


def read_new(path: Path, cursor: Cursor) -> list[str]:
    """Complete lines written since `cursor` (at most READ_MAX_BYTES a call: memory stays bounded, the rest
    comes next time); moves the cursor past them. A half-written last line waits for its end."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return []
    with handle:
        status = os.fstat(handle.fileno())
        lines: list[str] = []
        if cursor.inode is not None and status.st_ino != cursor.inode:
            lines = _rest_of_rotated(path, cursor)  # the shim renamed the file we were reading to .1
            cursor.offset = 0
        elif status.st_size < cursor.offset:
            cursor.offset = 0  # truncated in place
        cursor.inode = status.st_ino
        handle.seek(cursor.offset)
        chunk = handle.read(min(status.st_size - cursor.offset, READ_MAX_BYTES))
    complete = chunk.rfind(b"\n") + 1
    if complete == 0 and len(chunk) == READ_MAX_BYTES:
        complete = len(chunk)  # one line longer than the whole read: pass it on in pieces
    cursor.offset += complete
    return lines + split_lines(chunk[:complete])


def _rest_of_rotated(path: Path, cursor: Cursor) -> list[str]:
    rotated = path.with_name(path.name + ".1")
    try:
        with rotated.open("rb") as handle:
            if os.fstat(handle.fileno()).st_ino != cursor.inode:
                return []  # rotated more than once since the last poll: those lines are in older files
            handle.seek(cursor.offset)
            return split_lines(handle.read(READ_MAX_BYTES))
    except FileNotFoundError:
        return []


def split_lines(data: bytes) -> list[str]:
    """Lines split on "\\n" only, as the shim wrote them. Rejected: `str.splitlines`, which also splits on "\\r",
    "\\x85", "\\u2028" and more: an app logging a client's User-Agent holding "\\x85" would forge a line of any
    stream and time it pleased."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


# Every C0 control but tab, DEL, the C1 controls and the Unicode line and paragraph separators.
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def shown(text: str) -> str:
    """`text` with its control characters written out (`\\x1b`, `\\r`, `\\u2028`), for a terminal or a page."""
    return CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    named = {"\r": "\\r", "\n": "\\n"}.get(char)
    return named or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
