"""Replica shim: the small parent that owns a replica's output, so portero can die without the app noticing.

Like containerd's shim or conmon, it sits between portero and the app: it leads the replica's process group,
relays SIGTERM to the app, writes every line the app prints to a size-bounded rotating log with a timestamp,
and records the exit status in a file that a restarted portero can still read. A pipe to portero itself
was rejected: a SIGKILLed portero would break it and take the app down on its next write.

Every process the app starts stays in the replica. The shim is a child subreaper (Linux's
PR_SET_CHILD_SUBREAPER, what tini -s and systemd's service manager use), so a process that double-forks or
calls setsid, leaving the process group that portero signals, is reparented to the shim instead of to init.
When the app crashes, whatever it left gets SIGTERM and `--leftover-grace` seconds to end (a gunicorn worker whose
master died finishes the request it is serving: a SIGKILL at once cut those responses, a failed request each),
then SIGKILL; a stop signal reaches those adopted processes with the app's, and what is left when the app has
stopped is killed. The exit file lists them.
Without this, an app that daemonized its server left 12 orphans listening after 6 restarts of 2 replicas.

The shim writes its own files private (umask 077: the log is in portero's state directory), runs the app with
the umask portero was started with and, as root, as the spec's user (`--uid`): the shim itself stays portero's
user, the app cannot read the state directory.

Stdlib only, and nothing from portero: it starts once per replica and should start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO

MAX_LINE_BYTES = 64 * 1024  # a line longer than this is split: memory stays bounded
READ_BYTES = 64 * 1024
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
LEFTOVER_DEADLINE_S = 5.0  # a process that SIGKILL has not ended by then is stuck in the kernel: reported, left


class LogFile:
    """The replica's log: `<ISO time>Z <stream> <text>` lines, rotated at `max_bytes` on a line boundary.

    Written a chunk at a time: the lines a read brought share one timestamp (when they were read), and the prefix
    goes in with one `bytes.replace`, so the cost is per read, not per line. Rejected: a `logging` record per line
    (RotatingFileHandler): 9 us a line, 1.2 MB/s of 40-byte lines at a full core, and an app writing faster than
    that blocked on its pipe (200 MB took 92.5 s).
    """

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes if backups > 0 else 0  # no backups to rotate into: never rotate
        self.backups = backups
        self.lock = threading.Lock()  # stdout's and stderr's pumps share the file
        self.file = open(path, "ab")  # noqa: SIM115 - open for the shim's whole life
        self.size = self.file.tell()

    def lines(self, stream: str, text: bytes, at: float | None = None) -> None:
        """`text`: one or more lines without their last newline, already split on b"\n" only."""
        stamp = datetime.fromtimestamp(time.time() if at is None else at, UTC).isoformat(timespec="milliseconds")
        prefix = f"{stamp[:-6]}Z {stream} ".encode()
        self.write(prefix + text.replace(b"\n", b"\n" + prefix) + b"\n")

    def info(self, message: str, *args: object) -> None:
        self.lines("portero", (message % args).encode("utf-8", "replace"))

    def write(self, data: bytes) -> None:
        with self.lock:
            while True:
                room = self.max_bytes - self.size
                if self.max_bytes <= 0 or len(data) <= room:
                    self._put(data)
                    return
                cut = data.rfind(b"\n", 0, room) + 1  # the lines that fit go in this file
                if cut == 0 and self.size == 0:  # a line longer than a whole file: alone in one
                    cut = data.find(b"\n") + 1 or len(data)
                if cut:
                    self._put(data[:cut])
                    data = data[cut:]
                if not data:
                    return
                self._rotate()

    def _put(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()  # `portero logs -f` reads the file: a line shows up as soon as it is read
        self.size += len(data)

    def _rotate(self) -> None:
        self.file.close()
        for index in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{self.path}.{index}"):
                os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
        self.file = open(self.path, "ab")  # noqa: SIM115
        self.size = 0


def _pump(stream: IO[bytes], name: str, log: LogFile) -> None:
    """Copy the app's output to the log as fast as the app writes it: a read takes what the pipe holds (up to
    64 KiB), its complete lines go out in one write, a partial last line waits for the rest."""
    fd = stream.fileno()
    pending = b""
    while chunk := os.read(fd, READ_BYTES):
        pending += chunk
        pending = _flush(pending, name, log, final=False)
    if pending:
        _flush(pending, name, log, final=True)


def _flush(buffer: bytes, name: str, log: LogFile, *, final: bool) -> bytes:
    """Log the complete lines of `buffer` and return the rest; a line over MAX_LINE_BYTES is split."""
    while True:
        first = buffer.find(b"\n")
        if first > MAX_LINE_BYTES or (first < 0 and len(buffer) >= MAX_LINE_BYTES):
            log.lines(name, _text(buffer[:MAX_LINE_BYTES]))
            buffer = buffer[MAX_LINE_BYTES:]
            continue
        break
    end = len(buffer) if final else buffer.rfind(b"\n") + 1
    if end > 0:
        log.lines(name, _text(buffer[:end]))
    return buffer[end:]


def _text(lines: bytes) -> bytes:
    """Lines as the app wrote them, but valid UTF-8, without their \\r\\n or \\n endings (the last one too)."""
    text = lines.replace(b"\r\n", b"\n")
    return (text[:-1] if text.endswith(b"\n") else text).decode("utf-8", "replace").encode()


def _write_exit(path: str, code: int, started: float, killed: list[str]) -> None:
    status: dict[str, object] = {"code": code if code >= 0 else 128 - code, "signal": -code if code < 0 else None}
    status |= {"at": time.time(), "ran_s": round(time.time() - started, 3), "killed": killed}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(status, handle)
    os.replace(tmp, path)


def become_subreaper() -> bool:
    """Orphans of the app's process tree are reparented to this process (Linux 3.4+)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (one pass): an orphan of the app is a child of the shim by now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # ended meanwhile
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])  # the name, in parentheses, may hold anything
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(root: int) -> list[int]:
    children = _children()
    found, queue = [], list(children.get(root, []))
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def describe(pid: int) -> str | None:
    """`pid command line` of a live process; None for one that has ended already (a zombie, or gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").strip().decode("utf-8", "replace")
    except OSError:
        return None
    if stat[stat.rindex(b")") + 2 :].startswith(b"Z"):
        return None
    return f"{pid} {command[:80]}".rstrip()


def end_leftovers(grace_s: float) -> list[str]:
    """SIGTERM whatever the app left running, SIGKILL what is left after `grace_s`; returns what had to be ended."""
    ended: dict[int, str] = {}
    for pid in descendants(os.getpid()):
        if (described := describe(pid)) is not None:
            ended[pid] = described
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while ended and time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return list(ended.values())  # every one ended on SIGTERM
        time.sleep(0.01)
    for described in kill_leftovers():
        ended.setdefault(int(described.split(" ", 1)[0]), described)
    return list(ended.values())


def kill_leftovers() -> list[str]:
    """SIGKILL whatever the app left running, until the shim has no child left; returns what was killed."""
    killed: dict[int, str] = {}
    deadline = time.monotonic() + LEFTOVER_DEADLINE_S
    while time.monotonic() < deadline:
        for pid in descendants(os.getpid()):
            if pid not in killed and (described := describe(pid)) is not None:
                killed[pid] = described
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            break  # nothing left
        time.sleep(0.01)
    return list(killed.values())


def wait_for(app: int) -> int:
    """Reap children until the app ends: the orphans adopted meanwhile must not stay zombies."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == app:
            return os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    os.umask(0o077)  # the log files: in portero's private state directory, and private themselves
    log = LogFile(args.log, args.max_bytes, args.backups)

    if not become_subreaper():
        log.info("not a subreaper (no prctl): processes that leave the app's group may outlive it")
    groups = [int(g) for g in args.groups.split(",") if g] if args.uid is not None else None
    started = time.time()
    try:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            user=args.uid,
            group=args.gid,
            extra_groups=groups,
            umask=args.umask,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("cannot start %s: %s", command[0] if command else "(empty command)", exc)
        code = 126 if isinstance(exc, PermissionError) else 127  # the shell's codes: not executable, not found
        _write_exit(args.exit_file, code, started, [])
        return code
    stopping = _relay_stops(child)
    pumps = _pumps(child, log)
    code = child.returncode = wait_for(child.pid)
    # A stop gave the leftovers its signal and its grace already; after a crash they get theirs now.
    killed = kill_leftovers() if stopping else end_leftovers(args.leftover_grace)
    # A process stuck in the kernel may still hold the pipes: report the exit after a moment for the last lines,
    # not after it. Fix: 0.3 s per pipe held up every restart of a killed gunicorn master by 0.6 s, so its
    # endpoint stayed in rotation that much longer.
    flushed_by = time.monotonic() + 0.05
    for pump in pumps:
        pump.join(timeout=max(0.0, flushed_by - time.monotonic()))
    reason = f"signal {-code}" if code < 0 else f"code {code}"
    log.info("process exited with %s after %.1f s", reason, time.time() - started)
    if killed:
        log.info("ended %d process(es) the app left running: %s", len(killed), "; ".join(killed))
    _write_exit(args.exit_file, code, started, killed)
    return code if code >= 0 else 128 - code


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="portero-shim")
    parser.add_argument("--log", required=True)
    parser.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--backups", type=int, default=3)
    parser.add_argument("--exit-file", required=True)
    parser.add_argument("--leftover-grace", type=float, default=2.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--umask", type=lambda text: int(text, 8), default=-1, help="the app's (octal)")
    parser.add_argument("--uid", type=int, help="run the app as this user (the shim must be root)")
    parser.add_argument("--gid", type=int)
    parser.add_argument("--groups", default="", help="the app's supplementary groups, comma-separated")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def _relay_stops(child: subprocess.Popen[bytes]) -> list[int]:
    """Stop signals go to the app and to the orphans the shim adopted; returns the list of those relayed (the
    leftovers got theirs with the app's)."""
    stopping: list[int] = []

    def relay(signum: int, _frame: object) -> None:
        stopping.append(signum)
        child.send_signal(signum)
        for pid in _children().get(os.getpid(), []):  # orphans the shim adopted have no parent left to tell them
            if pid != child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, relay)
    return stopping


def _pumps(child: subprocess.Popen[bytes], log: LogFile) -> list[threading.Thread]:
    assert child.stdout is not None
    assert child.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, "stdout", log), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, "stderr", log), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    return pumps


if __name__ == "__main__":
    sys.exit(main())
