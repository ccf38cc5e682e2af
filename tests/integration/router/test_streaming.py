"""Bodies stream through the router with back-pressure, never read whole: a 100 MB upload and a 50 MB download
leave the router's memory (in a process of its own, so the test's memory does not count) nearly where it was."""

from __future__ import annotations

import socket
import threading
import time

import psutil
import pytest

from tests.integration.router.backend import Reply, pattern
from tests.integration.router.conftest import router_process_argv, wait_until
from tests.integration.router.rawhttp import Client, get

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def pattern_at(offset: int, size: int) -> bytes:
    """The bytes of the backend's `pattern` (0..255, repeated) from `offset` on."""
    start = offset % 256
    return (bytes(range(256)) * ((start + size) // 256 + 1))[start : start + size]


class PeakRss:
    """Samples a process's resident memory in a thread until stopped; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / MB


@pytest.fixture
def router_process(processes, backend):
    router = processes(router_process_argv({"app": [backend.address]}))
    with Client(router.port) as client:  # warm up: imports, first connection, first pool entry
        for _ in range(20):
            assert client.get("/warm").status == 200
    backend.requests.clear()
    backend.heads.clear()
    return router


def test_100_mb_chunked_upload_streams_through(router_process, backend):
    backend.keep_bodies = False
    backend.record_raw = False
    backend.handler = lambda request: Reply(body=str(request.body_size).encode())
    total = 100 * MB
    piece = b"%x\r\n%b\r\n" % (MB // 4, pattern(MB // 4))
    halfway_seen = 0
    with Client(router_process.port, timeout=30) as client, PeakRss(router_process.pid) as rss:
        client.send(b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(total // (MB // 4)):
            client.send(piece)
            if i == total // (MB // 4) // 2:  # halfway: the backend has much of it already (streamed, not held)
                wait_until(lambda: bool(backend.heads) and backend.heads[-1].body_size > 20 * MB, timeout=15)
                halfway_seen = backend.heads[-1].body_size
        client.send(b"0\r\n\r\n")
        response = client.response()
    assert response.status == 200
    assert response.body == str(total).encode()
    assert halfway_seen > 20 * MB
    print(f"upload: peak growth {rss.growth_mb:.1f} MB, {halfway_seen / MB:.0f} MB upstream at halfway")
    assert rss.growth_mb < 50, f"the router grew by {rss.growth_mb:.1f} MB during a 100 MB upload"


def test_50_mb_response_streams_to_a_slow_reader_with_back_pressure(router_process, backend):
    total = 50 * MB
    backend.handler = lambda request: Reply(stream_bytes=total)
    received = 0
    ahead = []  # how far the backend was ahead of the reader, sampled as it reads
    with Client(router_process.port, timeout=30) as client, PeakRss(router_process.pid) as rss:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        client.send(get("/download"))
        response = client.response(head=True)  # the head only: the body is read below, slowly
        assert response.header("content-length") == str(total)
        pending = bytes(client.buf)
        client.buf.clear()
        while received < total:
            data = pending or client.sock.recv(64 * 1024)
            pending = b""
            assert data, "the router closed the connection in the middle of the body"
            assert data == pattern_at(received, len(data)), f"wrong bytes at offset {received}"
            received += len(data)
            if received % (5 * MB) < len(data):
                ahead.append(backend.streamed - received)
                time.sleep(0.2)  # a slow reader: the backend must wait for it
            else:
                time.sleep(0.0005)
    assert received == total
    assert max(ahead) < 30 * MB, f"the backend ran {max(ahead) / MB:.1f} MB ahead of the reader: no back-pressure"
    print(f"download: peak growth {rss.growth_mb:.1f} MB, backend ahead by at most {max(ahead) / MB:.1f} MB")
    assert rss.growth_mb < 30, f"the router grew by {rss.growth_mb:.1f} MB while streaming 50 MB"
