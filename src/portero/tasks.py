"""Named background tasks with kept references: a loop that dies says so (a silent one stops scaling)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
_alive: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str, eternal: bool = False) -> asyncio.Task[T]:
    """Start `coro` as a task named `name`; `eternal` tasks log loudly if they ever end."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the one sanctioned place
    _alive.add(task)
    task.add_done_callback(lambda t: _finished(t, eternal))
    return task


def _finished(task: asyncio.Task[Any], eternal: bool) -> None:
    _alive.discard(task)
    if task.cancelled():
        if eternal:
            log.info("task %s cancelled", task.get_name())
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
    elif eternal:
        log.error("task %s ended although it should run for the whole life of portero", task.get_name())
