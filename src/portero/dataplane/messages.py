"""The channel between the control plane, the router's parent and its workers: JSON messages over Unix stream
sockets, each framed by its length (4 bytes, big-endian), so a reader never has to guess where one ends.

A message is a JSON object whose `t` names it:

| t | from → to | what |
|---|---|---|
| `hello` | control → parent | who connects (`portero`: its version); the parent answers with its own `hello` |
| `hello` | parent → control | pid, code build, served snapshot version, workers, listeners |
| `snapshot` | control → parent → workers | the whole routing state (`router/snapshot.py`), with its `version` |
| `ack` | worker → parent | the snapshot version the worker now serves |
| `applied` | parent → control | every live worker serves this version (or a newer one) |
| `stats` | worker → parent → control | counts since the last report and the gauges of now (`report.py`) |
| `demand` | worker → parent → control | a request waits for an endpoint of `service` (scale from zero) |
| `event` | worker/parent → control | something the operator should see: an ejection, a worker that died |
| `restart` | control → parent | replace every worker (and the parent itself) without refusing a connection |
| `stop` | control → parent → workers | finish requests within `grace_s`, then exit |
| `error` | parent → control | a snapshot the parent cannot serve (a port it cannot listen on), and why |

Rejected: pickle (a process that can write to the socket could run code in the router), and a line-delimited
format (a snapshot has no business being limited to one line's worth of escaping).
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

MAX_MESSAGE_BYTES = 64 << 20  # a snapshot of thousands of endpoints is a few MB; anything bigger is a fault
_LENGTH = struct.Struct(">I")


class ChannelError(ConnectionError):
    """The other side sent something that is not a message of this channel."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise ChannelError(f"message {message.get('t')!r} of {len(body)} bytes is over {MAX_MESSAGE_BYTES}")
    return _LENGTH.pack(len(body)) + body


def send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    """Queue `message` on `writer` (the caller drains when it must know it went)."""
    writer.write(encode(message))


async def receive(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the other side closed the channel."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ChannelError("the channel closed in the middle of a message") from exc
        return None
    (size,) = _LENGTH.unpack(head)
    if size > MAX_MESSAGE_BYTES:
        raise ChannelError(f"a message of {size} bytes announced; at most {MAX_MESSAGE_BYTES}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ChannelError("the channel closed in the middle of a message") from exc
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ChannelError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ChannelError("a message must be a JSON object with a string `t`")
    return message
