"""A router worker: one engine (`portero.router`) on the listening sockets it inherited from the router's parent.

It loads the snapshot its parent hands it before it accepts a connection, acknowledges every snapshot it loads,
reports its counts every REPORT_S, passes on demand (a request waiting for an endpoint) and events, and on `stop`
(or SIGTERM) stops accepting, lets requests in flight finish, closes each connection after its current response,
reports a last time and exits. The listening sockets stay open in the parent and in the other workers, so the
kernel keeps queueing connections for them meanwhile: stopping a worker refuses nobody.

If the parent goes away, the worker keeps serving the last snapshot it had (the control plane may come back;
traffic must not stop meanwhile), until SIGTERM.

A spare (`--spare`) loads every snapshot but accepts nothing until the parent says `serve`: it takes the place of a
worker that died within milliseconds, where starting a new one takes Python a second or more on a busy machine.

    python -m portero.dataplane.worker --id N --channel FD --listener FD [--listener FD ...] [--tls-listener FD ...]
        --state-dir DIR [--spare]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from typing import Any

import uvloop

from portero.dataplane import messages
from portero.dataplane.report import REPORT_S, Reporter
from portero.router.server import Router
from portero.router.snapshot import RoutingSnapshot

log = logging.getLogger("portero.router.worker")


class Worker:
    def __init__(self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.reader = reader
        self.writer = writer
        self.router: Router | None = None
        self.listeners: list[socket.socket] = []
        self.tls_listeners: list[socket.socket] = []
        self.reporter: Reporter | None = None
        self.orphaned = False
        self.quiet = False  # the parent is about to exec: messages wait until it speaks again
        self.held: list[dict[str, Any]] = []
        self.stopping = asyncio.Event()
        self.grace_s = 10.0

    def send(self, message: dict[str, Any]) -> None:
        if self.quiet:
            if message["t"] != "stats":  # counts are differences: the next report carries them anyway
                self.held.append(message)
        elif not self.orphaned and not self.writer.is_closing():
            messages.send(self.writer, message)

    async def serve(self, listeners: list[socket.socket], tls_listeners: list[socket.socket], *, spare: bool) -> None:
        first = await messages.receive(self.reader)
        if first is None or first["t"] != "snapshot":
            raise SystemExit("the router's parent sent no snapshot")
        snapshot = RoutingSnapshot.from_json(first["snapshot"])
        router = self.router = Router(snapshot.settings)
        router.now = asyncio.get_running_loop().time
        router.load(snapshot)  # before the first connection is accepted: nobody sees an empty router
        router.on_demand(lambda service: self.send({"t": "demand", "service": service}))
        router.on_event(
            lambda kind, service, address, message: self.send(
                {"t": "event", "kind": kind, "service": service, "address": address, "message": message}
            )
        )
        self.listeners = listeners
        self.tls_listeners = tls_listeners
        if not spare:
            await router.start(listeners, tls_listeners)
        self.reporter = Reporter(router)
        self.send({"t": "ack", "version": snapshot.version})
        gc.freeze()  # what start-up made lives as long as the worker: out of the collector's walks (daemon.py)
        reporting = asyncio.ensure_future(self._report())
        try:
            await self._listen()
            await self.stopping.wait()
        finally:
            reporting.cancel()
        await router.stop(grace_s=self.grace_s)
        self.send(self.reporter.report())
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def _listen(self) -> None:
        """Messages from the parent until `stop`; if the parent goes away, serve on as an orphan."""
        assert self.router is not None
        while not self.stopping.is_set():
            try:
                message = await messages.receive(self.reader)
            except ConnectionError:
                message = None
            if message is None:
                self.orphaned = True
                log.warning("worker %d: the router's parent is gone; serving the last snapshot", self.number)
                return
            if self.quiet:  # the parent (its new program) speaks again
                self.quiet = False
                for held in self.held:
                    self.send(held)
                self.held = []
            await self._obey(message)

    async def _obey(self, message: dict[str, Any]) -> None:
        assert self.router is not None
        kind = message["t"]
        if kind == "quiet":
            self.send({"t": "quiet"})
            self.quiet = True
        elif kind == "snapshot":
            snapshot = RoutingSnapshot.from_json(message["snapshot"])
            self.router.load(snapshot)
            self.send({"t": "ack", "version": snapshot.version})
        elif kind == "serve":  # a spare takes a dead worker's place, on that worker's listening sockets
            chosen = [sock for sock in self.listeners if sock.fileno() == int(message["listener"])]
            secure = int(message.get("tls_listener", -1))
            chosen_tls = [sock for sock in self.tls_listeners if sock.fileno() == secure]
            for sock in self.listeners + self.tls_listeners:
                if sock not in chosen and sock not in chosen_tls:
                    sock.close()  # the parent holds them: closing them here changes nothing for the others
            await self.router.start(chosen, chosen_tls)
        elif kind == "stop":
            self.grace_s = float(message.get("grace_s", self.grace_s))
            self.stopping.set()

    async def _report(self) -> None:
        assert self.reporter is not None
        while True:
            await asyncio.sleep(REPORT_S)
            self.send(self.reporter.report())


async def _main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    channel = socket.socket(fileno=args.channel)
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    worker = Worker(args.id, reader, writer)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stopping.set)
    listeners = [socket.socket(fileno=fd) for fd in args.listener]
    tls_listeners = [socket.socket(fileno=fd) for fd in args.tls_listener]
    await worker.serve(listeners, tls_listeners, spare=args.spare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portero-router-worker")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--listener", type=int, action="append", default=[])
    parser.add_argument("--tls-listener", type=int, action="append", default=[], help="A listener that speaks TLS.")
    parser.add_argument("--spare", action="store_true", help="Load snapshots, accept nothing until told `serve`.")
    parser.add_argument("--state-dir", required=True)  # only to tell whose worker this is (ps, tests' cleanup)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker {args.id}: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvloop.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
