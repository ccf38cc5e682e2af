"""The router's active check of an endpoint: one GET of its health path, judged by the status line alone.

Written here rather than taken from an HTTP client library: the router's workers start faster without one (httpx
was a fifth of a worker's start), and a check needs nothing a status line does not say.
"""

from __future__ import annotations

import asyncio


async def probe(host: str, port: int, path: str, timeout_s: float) -> bool:
    """True when `GET path` answers 2xx or 3xx within `timeout_s`."""
    try:
        return await asyncio.wait_for(_get(host, port, path), timeout_s)
    except (OSError, TimeoutError, ValueError):
        return False


async def _get(host: str, port: int, path: str) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: portero-check\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        line = await reader.readline()
    finally:
        writer.close()
    parts = line.split(b" ", 2)
    return len(parts) >= 2 and parts[0][:7] == b"HTTP/1." and parts[1].isdigit() and 200 <= int(parts[1]) < 400
