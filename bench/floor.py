"""The floor under any router written on uvloop and httptools here, beside HAProxy and portero.

Two stand-ins for a router that does nothing, each one process on core 0 (the one-worker layout of bench/run.py:
wrk with one thread and the nginx backend on core 1), each client connection paired with a backend connection
of its own:

- relay: bytes copied both ways by a uvloop protocol pair; no parsing at all.
- parse: the same copy, with httptools parsing every request and response as portero's parsers do (callbacks
  for the head's end and the message's end only).

Whatever a router adds (routing, balancing, the forwarded headers, retries, counting) costs on top of `parse`.
Measured as bench/run.py does: wrk at 50 connections, plain and browser-like heads, 2 s of warm-up, then 10 s;
CPU per request is the proxy's processes' user + system time over the run divided by the requests. Writes
bench/results/floor.md.

    .venv/bin/python bench/floor.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import statistics
import subprocess
import sys
from pathlib import Path

import psutil
import targets
from run import parse_wrk, wrk

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "floor.md"
FLOORS = {"relay": 18010, "parse": 18011}
CONNECTIONS = 50


# -- the stand-ins (run as `floor.py --serve MODE PORT`) ------------------------------------------------------------


class _Backend(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        import httptools

        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self) if client.parser is not None else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            self.parser.feed_data(data)
        assert self.client.transport is not None
        self.client.transport.write(data)

    def on_headers_complete(self) -> None: ...

    def on_message_complete(self) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    parse = False
    backend_port = targets.BACKEND_PORT

    def __init__(self) -> None:
        import httptools

        self.transport: asyncio.Transport | None = None
        self.backend: _Backend | None = None
        self.early: list[bytes] = []
        self.parser = httptools.HttpRequestParser(self) if self.parse else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, backend = await loop.create_connection(lambda: _Backend(self), "127.0.0.1", self.backend_port)
        self.backend = backend
        assert backend.transport is not None
        for data in self.early:
            backend.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            self.parser.feed_data(data)
        if self.backend is None or self.backend.transport is None:
            self.early.append(data)
        else:
            self.backend.transport.write(data)

    def on_headers_complete(self) -> None: ...

    def on_message_complete(self) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.close()


def serve(mode: str, port: int) -> None:
    import uvloop

    _Client.parse = mode == "parse"

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Client, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    uvloop.run(main())


# -- the measurement --------------------------------------------------------------------------------------------------


def measure(port: int, processes: list[psutil.Process], browser: bool) -> tuple[float, float, float]:
    """requests/s, p99 (ms) and the processes' CPU per request (µs) over one wrk run, after a warm-up."""
    layout = targets.LAYOUTS[1]
    wrk(layout, port, CONNECTIONS, 2, browser)
    before = sum(sum(p.cpu_times()[:2]) for p in processes)
    output = wrk(layout, port, CONNECTIONS, 10, browser)
    after = sum(sum(p.cpu_times()[:2]) for p in processes)
    rps, _, p99, errors, non_2xx = parse_wrk(output)
    if errors or non_2xx:
        raise RuntimeError(f"port {port}: {errors} socket errors, {non_2xx} non-2xx")
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return rps, p99, 1e6 * (after - before) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the report gives medians")
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    targets.check_tools()
    names = ("haproxy", "relay", "parse", "portero")
    results: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
    with targets.Bench(("haproxy", "portero"), targets.LAYOUTS[1]) as bench:
        floors = {
            mode: subprocess.Popen(targets.pinned("0", [sys.executable, __file__, "--serve", mode, str(port)]))
            for mode, port in FLOORS.items()
        }
        try:
            for port in FLOORS.values():
                targets.wait_port(port)
            for round_ in range(args.rounds):
                for name in names:
                    for browser in (False, True):
                        if name in floors:
                            port, processes = FLOORS[name], [psutil.Process(floors[name].pid)]
                        else:
                            port, processes = targets.PORTS[name], bench.servers[name].processes()
                        run = measure(port, processes, browser)
                        results.setdefault((name, browser), []).append(run)
                        print(
                            f"round {round_ + 1} {name:8} {'browser' if browser else 'plain':7} {run[0]:9,.0f} req/s"
                            f"  p99 {run[1]:.2f} ms  {run[2]:.1f} µs CPU/request",
                            flush=True,
                        )
        finally:
            for process in floors.values():
                process.kill()
                process.wait()
    report = _report(results, args.rounds)
    RESULTS.write_text(report)
    print(report)


def _report(results: dict[tuple[str, bool], list[tuple[float, float, float]]], rounds: int) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    lines = [
        f"# The floor under a uvloop router, {now}",
        "",
        f"`bench/floor.py --rounds {rounds}` at commit {commit.stdout.strip() or '?'}: medians of {rounds} interleaved "
        f"rounds; wrk (1 thread, {CONNECTIONS} connections) and the nginx backend on core 1, each proxy alone on core "
        "0. CPU per request: the proxy's processes' user + system time over the 10-s run, divided by its requests.",
        "",
        "| proxy | headers | requests/s | p99 | CPU per request | req/s vs HAProxy | CPU vs HAProxy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for browser in (False, True):
        base = [statistics.median(v) for v in zip(*results[("haproxy", browser)], strict=True)]
        for name in ("haproxy", "relay", "parse", "portero"):
            rps, p99, cpu = (statistics.median(v) for v in zip(*results[(name, browser)], strict=True))
            lines.append(
                f"| {name} | {'browser' if browser else 'plain'} | {rps:,.0f} | {p99:.2f} ms | {cpu:.1f} µs "
                f"| {rps / base[0]:.2f}x | {cpu / base[2]:.2f}x |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
