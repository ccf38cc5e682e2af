"""Memory per idle keep-alive client connection: portero's router against HAProxy and nginx.

For each server (one worker, pinned as targets.LAYOUTS[1]): warm it up, take the RSS of its serving processes
(portero: the router's worker, not the control plane; nginx: its worker), open N client connections (from
several source addresses in 127.0.0.0/8, each with one request answered, so each is a real keep-alive connection
the server holds between requests), let it settle, take its RSS again, and report (after - before) / N. Then
every connection is used once more: a second request on each must get 200, which proves the server held all of
them for the whole hold.

    .venv/bin/python bench/idle_conns.py [--connections 10000] [--hold 5] [--browser] [portero haproxy nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import targets

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-conns\r\n\r\n"
BROWSER_LUA = Path(__file__).resolve().parent / "browser.lua"
SOURCES = [f"127.0.1.{i}" for i in range(1, 11)]  # 10 source addresses: ephemeral ports never run short
CONNECT_CONCURRENCY = 256
SETTLE_S = 2.0


@dataclass
class IdleResult:
    name: str
    wanted: int
    held: int
    errors: int
    second_ok: int
    rss_before: int
    rss_after: int
    open_s: float

    @property
    def per_conn_bytes(self) -> float:
        return (self.rss_after - self.rss_before) / max(self.held, 1)


def browser_request() -> bytes:
    """The request with browser.lua's headers (what wrk sends in the browser-like runs)."""
    headers = re.findall(r'wrk\.headers\["([^"]+)"\] = "([^"]*)"', BROWSER_LUA.read_text())
    lines = ["GET / HTTP/1.1", "Host: bench", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def open_one(port: int, index: int, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect
    sock.bind((SOURCES[index % len(SOURCES)], 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=65536)
    writer.write(request)
    status = await asyncio.wait_for(read_response(reader), 10)
    if status != 200:
        writer.close()
        raise RuntimeError(f"status {status}")
    return reader, writer


async def second_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    try:
        writer.write(request)
        return await asyncio.wait_for(read_response(reader), 10) == 200
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError):
        return False


async def measure(server: targets.Server, connections: int, hold_s: float, request: bytes) -> IdleResult:
    for _ in range(50):  # warm-up: first-use allocations are not per connection
        targets.get_ok(server.port)
    await asyncio.sleep(SETTLE_S)
    before = server.rss_bytes()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def gated(index: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await open_one(server.port, index, request)

    started = time.monotonic()
    outcomes = await asyncio.gather(*(gated(i) for i in range(connections)), return_exceptions=True)
    open_s = time.monotonic() - started
    held = [o for o in outcomes if isinstance(o, tuple)]
    failures = [o for o in outcomes if not isinstance(o, tuple)]
    if failures:
        print(f"  {server.name}: {len(failures)} connections failed, first: {failures[0]!r}")
    await asyncio.sleep(SETTLE_S)
    after = server.rss_bytes()
    await asyncio.sleep(max(hold_s - SETTLE_S, 0))
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def gated_second(pair: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
        async with gate:
            return await second_request(*pair, request)

    second = await asyncio.gather(*(gated_second(p) for p in held))
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.5)
    return IdleResult(server.name, connections, len(held), len(failures), sum(second), before, after, open_s)


def table(results: list[IdleResult]) -> str:
    lines = [
        "| server | connections held | errors | 2nd request OK | RSS before | RSS after | per connection |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.held:,} of {r.wanted:,} | {r.errors + (r.held - r.second_ok)} | {r.second_ok:,} | "
            f"{r.rss_before / 2**20:.1f} MiB | {r.rss_after / 2**20:.1f} MiB | {r.per_conn_bytes / 1024:.2f} KB |"
        )
    return "\n".join(lines)


def run(
    bench: targets.Bench, names: list[str], connections: int, hold_s: float, browser: bool = False
) -> list[IdleResult]:
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(core) for core in bench.layout.load_cores.split(",")})  # the clients: the load's
    results = []
    request = browser_request() if browser else REQUEST
    try:
        for name in names:
            kind = "browser-like requests" if browser else "small requests"
            print(f"idle: {connections:,} keep-alive connections to {name} ({kind})...", flush=True)
            result = asyncio.run(measure(bench.servers[name], connections, hold_s, request))
            print(
                f"  {name}: held {result.held:,} (opened in {result.open_s:.1f} s), "
                f"{result.per_conn_bytes / 1024:.2f} KB each, second request OK on {result.second_ok:,}",
                flush=True,
            )
            results.append(result)
    finally:
        os.sched_setaffinity(0, affinity)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds every connection is held idle")
    parser.add_argument("--browser", action="store_true", help="send browser.lua's headers in each request")
    parser.add_argument("servers", nargs="*", default=["portero", "haproxy", "nginx"])
    args = parser.parse_args()
    targets.check_tools()
    targets.raise_nofile(args.connections + 1000)
    with targets.Bench(tuple(args.servers)) as bench:
        results = run(bench, args.servers, args.connections, args.hold, args.browser)
    print(table(results))


if __name__ == "__main__":
    main()
