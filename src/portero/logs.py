"""Reading replica logs: the shim writes `<ISO time> <stream> <text>` lines; here they are parsed, merged,
filtered and followed. Rotated files are read oldest first, and memory stays bounded by `limit`."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^(?P<at>\d{4}-\d\d-\d\dT[\d:.]+Z) (?P<stream>stdout|stderr|portero) (?P<text>.*)$")
FOLLOW_POLL_S = 0.2


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


def read(sources: Iterable[LogSource], since: float | None, grep: str | None, limit: int) -> list[LogLine]:
    """The last `limit` matching lines of all sources, in time order."""
    lines: list[LogLine] = []
    for source in sources:
        kept: deque[LogLine] = deque(maxlen=limit)
        for file in _files(source.path):
            try:
                with file.open(encoding="utf-8", errors="replace") as handle:
                    for raw in handle:
                        line = parse(raw.rstrip("\n"), source)
                        if line is not None and _wanted(line, since, grep):
                            kept.append(line)
            except FileNotFoundError:
                continue
        lines.extend(kept)
    lines.sort(key=lambda line: line.at)
    return lines[-limit:]


def _wanted(line: LogLine, since: float | None, grep: str | None) -> bool:
    return (since is None or line.at >= since) and (grep is None or grep in line.text)


async def follow(
    sources: Iterable[LogSource], grep: str | None, poll_s: float = FOLLOW_POLL_S
) -> AsyncIterator[LogLine]:
    """New lines as they are written, from the current end of each file; survives rotation."""
    offsets = {source: _size(source.path) for source in sources}
    while True:
        for source, offset in list(offsets.items()):
            size = _size(source.path)
            if size < offset:
                offset = 0  # rotated: the current file is a new one
            if size == offset:
                continue
            with source.path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(size - offset)
            complete = chunk.rfind(b"\n") + 1  # a half-written line waits for its end
            offsets[source] = offset + complete
            for raw in chunk[:complete].decode("utf-8", "replace").splitlines():
                line = parse(raw, source)
                if line is not None and _wanted(line, None, grep):
                    yield line
        await asyncio.sleep(poll_s)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
