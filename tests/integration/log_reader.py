"""An operator reading a replica's logs through the API, in a process of its own, as a real one would be: in the
test's process its JSON decoding would hold the GIL the load generator needs, and the router's p99 would measure
the test. Reads the last 10,000 lines and greps all 40 MB, every half second (an operator's searches and the
dashboard's reloads come seconds apart), with the dashboard's log stream open meanwhile, until it reads a line on
stdin; then prints how many reads it made. Back to back the reads would keep a core busy (0.06 s of the control
plane's CPU each), and on this machine any busy core moves the router's p99, at any priority: a SCHED_IDLE busy
loop on each core took wrk's p99 from 3.9 to 6.7 ms.

    python -m tests.integration.log_reader ADMIN_URL SERVICE   (the token in PORTERO_TOKEN)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import httpx

PAUSE_S = 0.5


def main() -> None:
    url, service = sys.argv[1], sys.argv[2]
    headers = {"Authorization": f"Bearer {os.environ['PORTERO_TOKEN']}"}
    stop = threading.Event()
    reads = 0

    def read() -> None:
        nonlocal reads
        with httpx.Client(trust_env=False, headers=headers, timeout=60) as client:
            while not stop.is_set():
                client.get(f"{url}/logs", params={"service": service, "limit": 10_000}).raise_for_status()
                grep = {"service": service, "grep": "nothing matches this", "limit": 10}
                client.get(f"{url}/logs", params=grep).raise_for_status()
                reads += 2
                stop.wait(PAUSE_S)

    def follow() -> None:  # the dashboard's log stream (opened again whenever it falls quiet)
        with httpx.Client(trust_env=False, headers=headers, timeout=httpx.Timeout(5, read=1)) as client:
            while not stop.is_set():
                with (
                    contextlib.suppress(httpx.ReadTimeout),
                    client.stream("GET", f"{url}/logs", params={"follow": "true"}) as stream,
                ):
                    for _ in stream.iter_lines():
                        if stop.is_set():
                            return

    threads = [threading.Thread(target=work) for work in (read, follow)]
    for thread in threads:
        thread.start()
    sys.stdin.readline()
    stop.set()
    for thread in threads:
        thread.join()
    print(reads, flush=True)


if __name__ == "__main__":
    main()
