"""A WebSocket (RFC 6455) through the router: the upgrade is forwarded, 101 comes back, frames are tunnelled."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from tests.integration.router.backend import WS_GUID, Reply, encode_frame
from tests.integration.router.rawhttp import Client

pytestmark = pytest.mark.integration

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example: its accept value is known
HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def read_frame(client: Client) -> tuple[int, bytes]:
    first, second = client.read_exactly(2)
    assert not second & 0x80, "a server's frames are never masked"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", client.read_exactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", client.read_exactly(8))
    return first & 0x0F, client.read_exactly(size)


def test_websocket_echo_through_the_router(proxy, backend):
    backend.handler = lambda request: Reply(websocket=True)
    with Client(proxy.port) as client:
        response = client.request(HANDSHAKE)
        assert response.status == 101
        assert response.header("upgrade").lower() == "websocket"
        assert response.header("connection").lower() == "upgrade"
        assert response.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert (
            response.header("sec-websocket-accept")
            == base64.b64encode(hashlib.sha1(KEY.encode() + WS_GUID).digest()).decode()
        )

        client.send(encode_frame(0x1, b"hello through portero", mask=True))
        assert read_frame(client) == (0x1, b"hello through portero")

        big = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length, several TCP segments
        client.send(encode_frame(0x2, big, mask=True))
        assert read_frame(client) == (0x2, big)

        client.send(encode_frame(0x8, struct.pack("!H", 1000), mask=True))
        assert read_frame(client) == (0x8, struct.pack("!H", 1000))
        assert client.closed_within(5)
    request = backend.requests[0]
    assert request.header("upgrade") == "websocket"
    assert "upgrade" in request.header("connection").lower()
    assert request.header("sec-websocket-key") == KEY


def test_frame_sent_with_the_handshake_is_delivered_after_the_101(proxy, backend):
    backend.handler = lambda request: Reply(websocket=True)
    with Client(proxy.port) as client:
        client.send(HANDSHAKE + encode_frame(0x1, b"early", mask=True))
        assert client.response().status == 101
        assert read_frame(client) == (0x1, b"early")


def test_refused_upgrade_is_an_ordinary_response(proxy, backend):
    backend.handler = lambda request: Reply(status=426, body=b"no websockets here")
    with Client(proxy.port) as client:
        response = client.request(HANDSHAKE)
        assert (response.status, response.body) == (426, b"no websockets here")
