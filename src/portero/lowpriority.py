"""Work of the control plane that may wait: run in threads at a low CPU priority, so that on a busy machine the
router's workers and the replicas go first (a 40 MB log read took the router's p99 from 7.5 to 18 ms on 2 cores).

HAProxy raises its own priority (`nice -N`), which needs privilege; lowering a thread of ours needs none. On Linux
a thread has its own nice value (setpriority on its thread id), so only these threads yield, not the event loop
that answers the API and drives the controllers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

NICE = 10  # added to the process's: CFS weight 110 against 1024, about a tenth of the CPU traffic gets when busy
WORKERS = 4
T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None


def _lower() -> None:
    with contextlib.suppress(OSError):  # not Linux, or a seccomp policy: run at normal priority
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + NICE))


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="portero-low", initializer=_lower)
    return _pool


async def run(work: Callable[..., T], *args: object) -> T:
    """`work(*args)` in a low-priority thread, awaited."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), functools.partial(work, *args))
