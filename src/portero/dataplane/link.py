"""The control plane's side of the channel to the router's parent: find it (or start it), push snapshots, know when
every worker serves one, and take in counts, demand and events.

The parent is started detached (its own session, its output to `<state>/router/router.log`), so that it outlives
this process; a control plane that starts while one runs adopts it instead. When the channel breaks (the parent
replaced itself by exec on a restart, or died), the link connects again and sends the latest snapshot, starting a
new parent only if none answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portero.dataplane import messages
from portero.dataplane.build import BUILD
from portero.dataplane.parent import SOCKET_NAME, router_dir
from portero.dataplane.report import RouterView
from portero.router.snapshot import RoutingSnapshot
from portero.tasks import spawn

log = logging.getLogger(__name__)
START_TIMEOUT_S = 20.0  # a new parent must answer within this (it imports portero, binds, starts its workers)
RECONNECT_S = 0.05


class RouterUnavailable(RuntimeError):
    """The router's parent cannot be started or reached; the message says why."""


@dataclass
class Hello:
    pid: int
    build: str
    version: int  # the snapshot it serves
    workers: list[dict[str, Any]]
    listeners: list[str]
    replacing: bool = False  # a restart is replacing its workers
    spare: tuple[int, ...] = ()  # pids of the spare workers (loaded, not accepting)

    @staticmethod
    def of(message: dict[str, Any]) -> Hello:
        return Hello(
            int(message["pid"]),
            str(message["build"]),
            int(message["version"]),
            list(message["workers"]),
            list(message["listeners"]),
            bool(message.get("replacing", False)),
            tuple(int(pid) for pid in message.get("spare", ())),
        )


class RouterLink:
    def __init__(self, state_dir: Path) -> None:
        state_dir = state_dir.resolve()  # the parent is told it: it must not depend on this process's cwd
        self.dir = router_dir(state_dir)
        self.state_dir = state_dir
        self.view = RouterView()
        self.on_demand: list[Callable[[str], None]] = []
        self.on_event: list[Callable[[dict[str, Any]], None]] = []
        self.hello: Hello | None = None
        self.adopted = False  # found running rather than started by this control plane
        self.applied = -1  # the newest snapshot version every worker serves
        self.error: str | None = None  # the last snapshot the parent refused, and why
        self._latest: RoutingSnapshot | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # a report or an acknowledgement came
        self._closing = False
        self._started: subprocess.Popen[bytes] | None = None
        self._hellos = 0  # hellos received: `refresh` waits for the next one

    # -- finding or starting the parent ---------------------------------------------------------------------------

    async def open(self) -> Hello:
        """Adopt the router running for this state directory, or start one."""
        if await self._connect():
            self.adopted = True
        else:
            self._launch()
            deadline = time.monotonic() + START_TIMEOUT_S
            while not await self._connect():
                if self._started is not None and self._started.poll() is not None:
                    raise RouterUnavailable(f"the router exited at start; see {self.dir / 'router.log'}")
                if time.monotonic() > deadline:
                    raise RouterUnavailable(f"the router did not answer within {START_TIMEOUT_S:.0f} s")
                await asyncio.sleep(RECONNECT_S)
        assert self.hello is not None
        return self.hello

    def _launch(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / "router.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._started = subprocess.Popen(
                [sys.executable, "-m", "portero.dataplane.parent", "--state-dir", str(self.state_dir)],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,  # its own session: a signal to portero's group does not reach it
                close_fds=True,
            )
        finally:
            os.close(fd)
        log.info("started the router (pid %d)", self._started.pid)

    async def _connect(self) -> bool:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.dir / SOCKET_NAME))
        except OSError:
            return False
        messages.send(writer, {"t": "hello", "portero": BUILD})
        try:
            answer = await asyncio.wait_for(messages.receive(reader), 5)
        except (TimeoutError, ConnectionError):
            writer.close()
            return False
        if answer is None or answer["t"] != "hello":
            writer.close()
            return False
        self.hello = Hello.of(answer)
        self.applied = max(self.applied, int(answer["applied"]))
        self._writer = writer
        self._reading = spawn(self._read(reader), name="router-link")
        if self._latest is not None and self._latest.version > self.hello.version:
            messages.send(writer, {"t": "snapshot", "snapshot": self._latest.to_json()})
        return True

    # -- the channel ----------------------------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (message := await messages.receive(reader)) is not None:
                self._handle(message)
        except ConnectionError as exc:
            log.warning("router channel: %s", exc)
        self._writer = None
        if not self._closing:
            spawn(self._reconnect(), name="router-reconnect")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "stats":
            self.view.apply(message, time.monotonic())
        elif kind == "hello":
            self.hello = Hello.of(message)
            self._hellos += 1
        elif kind == "applied":
            self.applied = max(self.applied, int(message["version"]))
            self.error = None
        elif kind == "demand":
            for hook in self.on_demand:
                hook(str(message["service"]))
        elif kind == "event":
            for event_hook in self.on_event:
                event_hook(message)
        elif kind == "error":
            self.error = str(message["message"])
            log.error("router: %s", self.error)
        self._changed.set()

    async def _reconnect(self) -> None:
        """The parent went away (an exec on restart, or it died): connect again, or start a new one."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._closing:
            if await self._connect():
                log.info("router channel open again (router pid %d)", self.hello.pid if self.hello else -1)
                return
            if time.monotonic() > deadline or (self.hello is not None and not _alive(self.hello.pid)):
                log.warning("the router is gone; starting another")
                self._launch()
                deadline = time.monotonic() + START_TIMEOUT_S
                self.hello = None
            await asyncio.sleep(RECONNECT_S)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def push(self, snapshot: RoutingSnapshot) -> None:
        """Send `snapshot`; if the channel is down, it goes as soon as it is up again."""
        self._latest = snapshot
        if self._writer is not None:
            messages.send(self._writer, {"t": "snapshot", "snapshot": snapshot.to_json()})

    async def wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `done()` holds, looked at after every message from the router; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.25))
        return True

    async def served(self, version: int, timeout_s: float) -> bool:
        """Every worker serves `version` (or a newer one)."""
        return await self.wait(lambda: self.applied >= version, timeout_s)

    # -- restart, stop, leave -------------------------------------------------------------------------------------

    async def restart(self, timeout_s: float = 30.0) -> Hello:
        """New workers and a new parent program, without refusing a connection; returns the new parent's hello."""
        if self._writer is None or self.hello is None:
            raise RouterUnavailable("the router does not answer")
        previous = {int(w["pid"]) for w in self.hello.workers}
        messages.send(self._writer, {"t": "restart"})
        await self._writer.drain()
        deadline = time.monotonic() + timeout_s
        while True:
            hello = self.hello
            if (
                hello is not None
                and not hello.replacing
                and hello.workers
                and not {int(w["pid"]) for w in hello.workers} & previous
            ):
                return hello
            if time.monotonic() > deadline:
                raise RouterUnavailable(f"the router did not restart within {timeout_s:.0f} s")
            if self._writer is not None:
                messages.send(self._writer, {"t": "hello", "portero": BUILD})  # its answer refreshes `hello`
            await asyncio.sleep(0.1)

    async def refresh(self, timeout_s: float = 2.0) -> None:
        """Ask the parent for a fresh `hello` (its workers now) and wait for it."""
        if self._writer is None:
            return
        seen = self._hellos
        messages.send(self._writer, {"t": "hello", "portero": BUILD})
        await self.wait(lambda: self._hellos > seen, timeout_s)

    async def stop(self, grace_s: float) -> None:
        """Stop the router: workers finish their requests within `grace_s`."""
        self._closing = True
        if self._writer is None:
            return
        messages.send(self._writer, {"t": "stop", "grace_s": grace_s})
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()
        if self._reading is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reading), grace_s + 15)
        if self._started is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._started.wait(5)

    async def leave(self) -> None:
        """Close the channel and leave the router running (it serves the last snapshot)."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._reading is not None:
            self._reading.cancel()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
