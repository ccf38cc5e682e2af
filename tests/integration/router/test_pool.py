"""The pool of connections to an endpoint, over real loopback sockets, in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from portero.router.upstream import Pool


async def test_a_connection_reset_before_its_opener_resumes_is_a_failed_connect_not_a_busy_one(monkeypatch):
    """A sync gunicorn worker killed with the router's new connection in its backlog resets it, and the reset can be
    read before the task that opened the connection runs again. That connection was handed to the request, which
    waited for the 60-s response timeout on a dead transport; now the opening fails, as a refused one does."""
    listener = socket.create_server(("127.0.0.1", 0))
    pool = Pool("127.0.0.1", listener.getsockname()[1], 4)
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection

    async def opened_then_reset(*args: Any, **kwargs: Any) -> Any:
        transport, conn = await create_connection(*args, **kwargs)
        accepted, _ = listener.accept()  # the handshake is done: it waits in the backlog
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # SO_LINGER 0: a reset, as from a killed process
        for _ in range(200):  # the reset is read (connection_lost) before the opener resumes
            if conn.lost:
                break
            await asyncio.sleep(0.01)
        assert conn.lost
        return transport, conn

    monkeypatch.setattr(loop, "create_connection", opened_then_reset)
    try:
        with pytest.raises(ConnectionResetError, match="reset the connection as it opened"):
            await pool.connect(2.0)
        assert pool.busy == set()
        assert pool.opened == 0
        monkeypatch.undo()
        conn = await pool.connect(2.0)  # the next one opens as usual
        assert not conn.lost
        assert pool.busy == {conn}
        assert pool.opened == 1
        conn.close()
    finally:
        listener.close()
