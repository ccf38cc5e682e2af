"""The router's parent process: it owns the listening sockets, runs the workers, and is the control plane's one
contact with the data plane.

Theory of operation. `portero up` starts the parent (or finds one running and adopts it) and connects to its
socket `<state>/router/router.sock` (owner-only). The parent binds the listening sockets the snapshot's settings
name and starts `router.workers` workers that share them; each worker gets the latest snapshot before it accepts
anything and acknowledges every one it loads. The parent passes snapshots on, tells the control plane when every
worker serves a version (`applied`), adds up the workers' counts (report.py) and hands them on every REPORT_S,
and relays demand and events. It keeps the last snapshot on disk too, so that it can serve it without any control
plane. When the control plane goes away, nothing here changes: the workers serve the last snapshot.

A worker that dies is replaced at once (the listening sockets stay open here, so the kernel keeps queueing for the
others meanwhile). A restart is hitless: new workers take the same listening sockets, and once each serves the
current snapshot the old ones stop accepting, finish their requests and close their connections after the next
response. The parent itself is replaced by exec on restart (a new portero version): every socket it holds, the
workers' channels and its lock are inherited by the new program, which starts the new workers.

    python -m portero.dataplane.parent --state-dir DIR [--inherit FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from portero.dataplane import listeners, messages
from portero.dataplane.build import BUILD
from portero.dataplane.report import REPORT_S, Merge
from portero.router.snapshot import RoutingSnapshot

log = logging.getLogger("portero.router.parent")
ROUTER_DIR = "router"
SOCKET_NAME = "router.sock"
LOCK_NAME = "router.lock"
SNAPSHOT_NAME = "snapshot.json"
EXEC_NAME = "exec.json"
READY_TIMEOUT_S = 15.0  # new workers must serve the current snapshot within this, or a restart is called off
RESPAWN_MAX_S = 5.0  # a worker that keeps dying is started again after at most this


@dataclass
class WorkerHandle:
    number: int
    pid: int
    pidfd: int
    slot: int  # the listening sockets it serves (index in `Parent.slots`, `tls_slots`); -1: a spare, given all
    writer: asyncio.StreamWriter | None = None
    version: int = -1  # the snapshot it acknowledged last
    stopping: bool = False
    spare: bool = False  # started and loaded, not accepting: it takes a dead worker's place at once
    quiet: bool = False  # it acknowledged `quiet`: nothing of it is left unread
    started_at: float = field(default_factory=time.monotonic)
    reading: asyncio.Task[None] | None = None


def router_dir(state_dir: Path) -> Path:
    return state_dir / ROUTER_DIR


def cores() -> int:
    return len(os.sched_getaffinity(0))


class Parent:
    def __init__(self, state_dir: Path) -> None:
        self.dir = router_dir(state_dir)
        self.state_dir = state_dir
        self.snapshot: dict[str, Any] | None = None  # the latest, as JSON
        self.version = -1
        self.address: tuple[str, int] | None = None  # where the router listens
        self.slots: list[socket.socket] = []  # one listening socket per worker (listeners.py says why)
        self.tls_address: tuple[str, int] | None = None  # where it listens for HTTPS (`router.tls`)
        self.tls_slots: list[socket.socket] = []  # as `slots`, for HTTPS: empty without `router.tls`
        self.workers: dict[int, WorkerHandle] = {}
        self.next_number = 1
        self.merge = Merge()
        self.control: asyncio.StreamWriter | None = None
        self.applied = -1  # the last version every live worker served, as told to the control plane
        self.stopped = asyncio.Event()
        self.lock_fd = -1
        self.server_sock: socket.socket | None = None
        self._deaths: list[float] = []  # when workers died unasked, for the respawn backoff
        self.replacing = False  # a restart is replacing the workers
        self.changed = asyncio.Event()  # a worker acknowledged, went quiet or ended

    # -- start ----------------------------------------------------------------------------------------------------

    def take_lock(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.lock_fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"a router already runs for {self.state_dir}") from None

    def bind_control(self) -> None:
        path = self.dir / SOCKET_NAME
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_mask)
        sock.listen(16)
        self.server_sock = sock

    async def inherit(self, path: Path) -> None:
        """Take over what the program before this exec held (see `restart`)."""
        state = json.loads(path.read_text())
        path.unlink()
        self.lock_fd = int(state["lock"])
        self.server_sock = socket.socket(fileno=int(state["control"]))
        if state["address"] is not None:
            self.address = (str(state["address"][0]), int(state["address"][1]))
        self.slots = [socket.socket(fileno=int(fd)) for fd in state["slots"]]
        if state.get("tls_address") is not None:
            self.tls_address = (str(state["tls_address"][0]), int(state["tls_address"][1]))
        self.tls_slots = [socket.socket(fileno=int(fd)) for fd in state.get("tls_slots", ())]
        self.snapshot = state["snapshot"]
        self.version = int(state["version"])
        self.next_number = int(state["next_number"])
        self.merge.restore(state["pending"])
        for entry in state["workers"]:
            handle = WorkerHandle(
                int(entry["number"]),
                int(entry["pid"]),
                int(entry["pidfd"]),
                int(entry["slot"]),
                spare=bool(entry["spare"]),
            )
            handle.version = int(entry["version"])
            self.workers[handle.number] = handle
            await self._watch(handle, socket.socket(fileno=int(entry["channel"])))
            self._send(handle, {"t": "resume"})

    async def run(self, inherited: Path | None) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(self.stop(None)))
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.restart()))
        if inherited is not None:
            await self.inherit(inherited)
        else:
            self.take_lock()
            self.bind_control()
        assert self.server_sock is not None
        server = await asyncio.start_unix_server(self._control, sock=self.server_sock)
        flushing = asyncio.ensure_future(self._flush())
        if inherited is not None:
            old = self._serving()
            log.info("router parent %d: running build %s; replacing %d worker(s)", os.getpid(), BUILD, len(old))
            self.replacing = True
            try:
                await self._replace(old)
            finally:
                self.replacing = False
            self.tell(self.hello())
        else:
            saved = self.dir / SNAPSHOT_NAME
            if saved.exists():  # a parent started again without a control plane: the last snapshot until one comes
                with contextlib.suppress(ValueError, OSError, KeyError):
                    await self._load(json.loads(saved.read_text()))
        log.info(
            "router parent %d up (build %s): %d worker(s) and %d spare",
            os.getpid(),
            BUILD,
            len(self._serving()),
            len(self._spares()),
        )
        await self.stopped.wait()
        flushing.cancel()
        server.close()

    # -- the control plane's channel ------------------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.control is not None:
            self.control.close()  # the newest control plane is the one that counts
        self.control = writer
        try:
            while (message := await messages.receive(reader)) is not None:
                await self._command(message, writer)
        except ConnectionError as exc:
            log.warning("control channel: %s", exc)
        except asyncio.CancelledError:  # the parent stops: 3.11's unix server logs a cancelled handler as an error
            return
        finally:
            if self.control is writer:
                self.control = None

    async def _command(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        kind = message["t"]
        if kind == "hello":
            messages.send(writer, self.hello())
            if self.applied >= 0:
                messages.send(writer, {"t": "applied", "version": self.applied})
        elif kind == "snapshot":
            await self._load(message["snapshot"])
        elif kind == "restart":
            await self.restart()
        elif kind == "stop":
            await self.stop(float(message["grace_s"]))

    def hello(self) -> dict[str, Any]:
        return {
            "t": "hello",
            "pid": os.getpid(),
            "build": BUILD,
            "version": self.version,
            "applied": self.applied,
            "replacing": self.replacing,
            "workers": [{"number": h.number, "pid": h.pid, "version": h.version} for h in self._serving()],
            "spare": [h.pid for h in self._spares()],
            "listeners": ([f"{self.address[0]}:{self.address[1]}"] if self.address else [])
            + ([f"{self.tls_address[0]}:{self.tls_address[1]} (https)"] if self.tls_address else []),
        }

    def tell(self, message: dict[str, Any]) -> None:
        if self.control is not None and not self.control.is_closing():
            messages.send(self.control, message)

    def event(self, kind: str, message: str) -> None:
        log.warning("%s", message)
        self.tell({"t": "event", "kind": kind, "service": "", "address": "", "message": message})

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            if self.control is not None:
                self.tell(self.merge.take())

    # -- snapshots ------------------------------------------------------------------------------------------------

    async def _load(self, data: dict[str, Any]) -> None:
        try:
            snapshot = RoutingSnapshot.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            self.tell({"t": "error", "version": data.get("version"), "message": f"snapshot refused: {exc}"})
            return
        settings = snapshot.settings
        wanted = (settings.host, settings.port)
        wanted_tls = (settings.tls.host or settings.host, settings.tls.port) if settings.tls is not None else None
        count = self._wanted_workers(snapshot)
        try:
            fresh, fresh_tls = self._bind_moved(snapshot, wanted, wanted_tls, count)
        except OSError:
            return
        self.snapshot, self.version = data, snapshot.version
        self._save(data)
        if fresh or wanted_tls != self.tls_address:
            await self._move(wanted if fresh else None, fresh, wanted_tls, fresh_tls)
            return
        for handle in self._serving() + self._spares():
            self._send(handle, {"t": "snapshot", "snapshot": data})
        await self._fit(count)

    def _bind_moved(
        self,
        snapshot: RoutingSnapshot,
        wanted: tuple[str, int],
        wanted_tls: tuple[str, int] | None,
        count: int,
    ) -> tuple[list[socket.socket], list[socket.socket]]:
        """New listening sockets for the addresses that changed (none for those that did not)."""
        fresh: list[socket.socket] = []
        try:
            if wanted != self.address:
                fresh = self._bind(snapshot, wanted, count, "router.port")
            if wanted_tls is not None and wanted_tls != self.tls_address:
                group = len(fresh or self.slots) or count
                return fresh, self._bind(snapshot, wanted_tls, group, "router.tls.port")
        except OSError:
            for sock in fresh:
                sock.close()
            raise
        return fresh, []

    async def _move(
        self,
        wanted: tuple[str, int] | None,
        fresh: list[socket.socket],
        wanted_tls: tuple[str, int] | None,
        fresh_tls: list[socket.socket],
    ) -> None:
        """New workers on the new listening sockets (`wanted` None: the plain one stays), then the old ones go."""
        moved = self.address is not None
        old_slots = (self.slots if wanted is not None else []) + self.tls_slots
        if wanted is not None:
            self.slots, self.address = fresh, wanted
        self.tls_slots, self.tls_address = fresh_tls, wanted_tls
        await self._replace(self._serving() + self._spares())
        for sock in old_slots:
            sock.close()  # the old workers hold their own copies until they are done
        if moved and self.address is not None:
            where = f"{self.address[0]}:{self.address[1]}"
            if wanted_tls is not None:
                where += f" and {wanted_tls[0]}:{wanted_tls[1]} (HTTPS)"
            self.event("router.listener", f"router now listening on {where}")

    def _bind(self, snapshot: RoutingSnapshot, where: tuple[str, int], count: int, setting: str) -> list[socket.socket]:
        try:
            return listeners.group(where[0], where[1], count)
        except OSError as exc:
            message = f"cannot listen on {where[0]}:{where[1]}: {exc.strerror} (set {setting})"
            self.tell({"t": "error", "version": snapshot.version, "message": message})
            log.error("%s", message)
            raise

    def _grow(self, count: int) -> None:
        """Both listener groups up to `count` members (more workers)."""
        if len(self.slots) < count:
            self.slots += listeners.grow(self.slots, count - len(self.slots))
        if self.tls_slots and len(self.tls_slots) < count:
            self.tls_slots += listeners.grow(self.tls_slots, count - len(self.tls_slots))

    def _save(self, data: dict[str, Any]) -> None:
        path = self.dir / SNAPSHOT_NAME
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)

    def _wanted_workers(self, snapshot: RoutingSnapshot) -> int:
        return snapshot.settings.workers or cores()

    def _grace(self) -> float:
        if self.snapshot is None:
            return 10.0
        return float(self.snapshot["settings"].get("worker_stop_grace_s", 10.0))

    # -- workers --------------------------------------------------------------------------------------------------

    def _serving(self) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if not h.stopping and not h.spare]

    def _spares(self) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if not h.stopping and h.spare]

    async def _fit(self, count: int) -> None:
        """`count` workers accepting, one per listening socket, and one spare: a worker that dies is replaced by the
        spare in milliseconds (starting a worker takes Python half a second to seconds on a busy machine), then a
        new spare starts."""
        if len(self.slots) < count:
            self._grow(count)
            for spare in self._spares():
                self._retire(spare)  # it was given the sockets there were: a new one gets them all
        serving = {h.slot: h for h in self._serving()}
        for slot in range(count):
            if slot not in serving:
                await self._spawn(slot)
        for slot, handle in serving.items():
            if slot >= count:
                self._retire(handle)
        if len(self.slots) > count:
            self._shrink(count)
        spares = self._spares()
        if not spares:
            await self._spawn(-1)
        for handle in spares[1:]:
            self._retire(handle)

    def _shrink(self, count: int) -> None:
        extra, self.slots = self.slots[count:], self.slots[:count]
        extra += self.tls_slots[count:]
        self.tls_slots = self.tls_slots[:count]
        listeners.allow_migration()
        for sock in extra:
            sock.close()  # their workers stop accepting, finish and go; their queues move to the others

    async def _spawn(self, slot: int) -> WorkerHandle:
        assert self.snapshot is not None
        number, self.next_number = self.next_number, self.next_number + 1
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_end.set_inheritable(True)
        spare = slot < 0
        given = self.slots if spare else [self.slots[slot]]
        given_tls = self.tls_slots if spare else self.tls_slots[slot : slot + 1]
        argv = [sys.executable, "-m", "portero.dataplane.worker", "--id", str(number)]
        argv += ["--channel", str(child_end.fileno()), "--state-dir", str(self.state_dir)]
        for sock in given:
            argv += ["--listener", str(sock.fileno())]
        for sock in given_tls:
            argv += ["--tls-listener", str(sock.fileno())]
        if spare:
            argv.append("--spare")
        try:
            # posix_spawn (vfork+exec) returns at once; it inherits only the fds marked inheritable
            pid = os.posix_spawn(sys.executable, argv, os.environ)  # noqa: ASYNC221
        finally:
            child_end.close()
        handle = WorkerHandle(number, pid, os.pidfd_open(pid), slot, spare=spare)
        self.workers[number] = handle
        await self._watch(handle, parent_end)
        self._send(handle, {"t": "snapshot", "snapshot": self.snapshot})
        log.info("%s %d started (pid %d)", "spare worker" if spare else "worker", number, pid)
        return handle

    async def _watch(self, handle: WorkerHandle, channel: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(handle.pidfd, self._exited, handle)
        reader, handle.writer = await asyncio.open_unix_connection(sock=channel)
        handle.reading = asyncio.ensure_future(self._read(handle, reader))

    async def _read(self, handle: WorkerHandle, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while (message := await messages.receive(reader)) is not None:
                kind = message["t"]
                if kind == "stats":
                    if not handle.spare:  # a spare routes nothing (and, not started, sweeps nothing)
                        self.merge.add(handle.number, message)
                elif kind == "ack":
                    handle.version = int(message["version"])
                    self._check_applied()
                    self.changed.set()
                elif kind in ("demand", "event"):
                    self.tell(message)
                elif kind == "quiet":  # it sends nothing more until told: its channel is read to a boundary
                    handle.quiet = True
                    self.changed.set()
                    return

    def _send(self, handle: WorkerHandle, message: dict[str, Any]) -> None:
        if handle.writer is not None and not handle.writer.is_closing():
            messages.send(handle.writer, message)

    def _check_applied(self) -> None:
        serving = self._serving()
        if not serving:
            return
        version = min(h.version for h in serving)
        if version > self.applied:
            self.applied = version
            self.tell({"t": "applied", "version": version})

    def _retire(self, handle: WorkerHandle) -> None:
        handle.stopping = True
        self._send(handle, {"t": "stop", "grace_s": self._grace()})

    def _exited(self, handle: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(handle.pidfd)
        os.close(handle.pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(handle.pid, 0)  # its pidfd is readable: it has ended, this does not wait
        self.workers.pop(handle.number, None)
        self.merge.forget(handle.number)
        self.changed.set()
        if handle.reading is not None:
            handle.reading.cancel()
        if handle.writer is not None:
            handle.writer.close()
        if handle.stopping or self.stopped.is_set() or self.snapshot is None:
            log.info("worker %d (pid %d) stopped", handle.number, handle.pid)
            self._check_applied()
            return
        spare = next((h for h in self._spares() if h.version >= 0), None)
        if spare is not None and 0 <= handle.slot < len(self.slots):  # loaded already: it accepts within ms
            spare.spare, spare.slot = False, handle.slot
            secure = self.tls_slots[handle.slot].fileno() if handle.slot < len(self.tls_slots) else -1
            self._send(spare, {"t": "serve", "listener": self.slots[handle.slot].fileno(), "tls_listener": secure})
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < 60] + [now]
        delay = min(RESPAWN_MAX_S, 0.1 * 2 ** max(0, len(self._deaths) - 3))  # at once, unless it keeps dying
        self.event("router.worker_died", f"router worker {handle.number} (pid {handle.pid}) died; starting another")
        loop.call_later(delay if len(self._deaths) > 3 else 0, lambda: asyncio.ensure_future(self._replace_dead()))

    async def _replace_dead(self) -> None:
        if self.snapshot is not None and not self.stopped.is_set():
            await self._fit(self._wanted_workers(RoutingSnapshot.from_json(self.snapshot)))

    async def _replace(self, old: list[WorkerHandle]) -> None:
        """New workers for `old`, one per listening socket: once every new one serves the current snapshot, the
        old ones stop accepting, finish their requests and close their connections."""
        if self.snapshot is None:
            return
        count = self._wanted_workers(RoutingSnapshot.from_json(self.snapshot))
        old = old + [h for h in self._spares() if h not in old]  # a new spare comes with the new workers
        self._grow(count)
        fresh = [await self._spawn(slot) for slot in range(count)]
        fresh.append(await self._spawn(-1))
        if not await self._until(
            lambda: all(h.version >= self.version or h.number not in self.workers for h in fresh), READY_TIMEOUT_S
        ) or not all(h.number in self.workers for h in fresh):
            for handle in fresh:
                self._retire(handle)
            self.event("router.restart_failed", "new router workers did not start in time; the old ones stay")
            return
        for handle in old:
            if handle.number in self.workers:
                self._retire(handle)
        self._check_applied()

    # -- restart and stop -----------------------------------------------------------------------------------------

    async def restart(self) -> None:
        """Become the installed portero's router parent (exec), which then replaces every worker."""
        if self.server_sock is None or self.snapshot is None:
            return
        await self._quiet()
        if self.control is not None:
            self.tell(self.merge.take())
            with contextlib.suppress(ConnectionError):
                await self.control.drain()
        state: dict[str, Any] = {
            "lock": self.lock_fd,
            "control": self.server_sock.fileno(),
            "address": list(self.address) if self.address else None,
            "slots": [sock.fileno() for sock in self.slots],
            "tls_address": list(self.tls_address) if self.tls_address else None,
            "tls_slots": [sock.fileno() for sock in self.tls_slots],
            "snapshot": self.snapshot,
            "version": self.version,
            "next_number": self.next_number,
            "pending": self.merge.save(),
        }
        workers: list[dict[str, Any]] = []
        keep = [self.lock_fd, self.server_sock.fileno(), *(sock.fileno() for sock in self.slots + self.tls_slots)]
        for handle in self.workers.values():
            if handle.writer is None or not handle.quiet:
                continue  # its channel cannot be handed over at a message's boundary: it ends with this program
            channel = handle.writer.get_extra_info("socket")
            fd = os.dup(channel.fileno())  # the loop's transport closes its own fd at exec
            keep += [fd, handle.pidfd]
            workers.append(
                {
                    "number": handle.number,
                    "pid": handle.pid,
                    "pidfd": handle.pidfd,
                    "channel": fd,
                    "version": handle.version,
                    "spare": handle.spare,
                    "slot": handle.slot,
                }
            )
        state["workers"] = workers
        for fd in keep:
            os.set_inheritable(fd, True)
        path = self.dir / EXEC_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle_file:
            json.dump(state, handle_file)
        log.info("router parent %d: exec of the installed portero's router (restart)", os.getpid())
        sys.stdout.flush()
        sys.stderr.flush()
        argv = [sys.executable, "-m", "portero.dataplane.parent", "--state-dir", str(self.state_dir)]
        os.execv(sys.executable, [*argv, "--inherit", str(path)])

    async def _until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `done()`, looked at whenever a worker acknowledges, goes quiet or ends; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True

    async def _quiet(self) -> None:
        """Ask every worker to hold its messages, and read each channel up to its answer: what is left unread
        at the exec is then nothing, and the new program starts reading at a message's boundary."""
        for handle in self.workers.values():
            self._send(handle, {"t": "quiet"})
        await self._until(lambda: all(h.quiet for h in self.workers.values()), 2.0)

    async def stop(self, grace_s: float | None) -> None:
        """Every worker finishes its requests within `grace_s`, then the parent exits."""
        if self.stopped.is_set():
            return
        grace = self._grace() if grace_s is None else grace_s
        for handle in list(self.workers.values()):
            handle.stopping = True
            self._send(handle, {"t": "stop", "grace_s": grace})
        if not await self._until(lambda: not self.workers, grace + 5):
            for handle in list(self.workers.values()):
                log.warning("worker %d outlived the stop's grace: SIGKILL", handle.number)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.pid, signal.SIGKILL)
            await self._until(lambda: not self.workers, 5)
        if self.control is not None:
            self.tell(self.merge.take())  # the last counts
            with contextlib.suppress(ConnectionError):
                await self.control.drain()
        (self.dir / SOCKET_NAME).unlink(missing_ok=True)
        log.info("router parent %d stopped", os.getpid())
        self.stopped.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portero-router")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--inherit", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s router: %(message)s")
    parent = Parent(args.state_dir.resolve())
    uvloop.run(parent.run(args.inherit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
