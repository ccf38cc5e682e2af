"""The control plane's slow work yields the CPU: its threads run at a lower priority, the event loop does not."""

import asyncio
import os
import threading

from portero import lowpriority


def own_nice() -> tuple[str, int]:
    return threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_work_runs_in_a_thread_at_a_lower_priority_and_the_loop_keeps_its_own():
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    name, nice = await lowpriority.run(own_nice)
    assert name.startswith("portero-low")
    assert nice == min(19, loop_nice + lowpriority.NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice
    assert await asyncio.gather(*(lowpriority.run(pow, n, 2) for n in range(8))) == [n * n for n in range(8)]
