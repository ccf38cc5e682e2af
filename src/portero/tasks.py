"""Named background tasks with kept references: a loop that dies says so (a silent one stops scaling)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
_alive: set[asyncio.Task[Any]] = set()
_eternal: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str, eternal: bool = False) -> asyncio.Task[T]:
    """Start `coro` as a task named `name`; `eternal` tasks log loudly if they end before `settle()`."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the one sanctioned place
    _alive.add(task)
    if eternal:
        _eternal.add(task)
    task.add_done_callback(_finished)
    return task


def settle(task: asyncio.Task[Any]) -> None:
    """An eternal task is about to be stopped on purpose (shutdown): its end is no longer an error."""
    _eternal.discard(task)


def _finished(task: asyncio.Task[Any]) -> None:
    _alive.discard(task)
    eternal = task in _eternal
    _eternal.discard(task)
    if task.cancelled():
        if eternal:
            log.error("task %s was cancelled although it should run for the whole life of portero", task.get_name())
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
    elif eternal:
        log.error("task %s ended although it should run for the whole life of portero", task.get_name())
