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
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO

MAX_LINE_BYTES = 64 * 1024  # a line longer than this is split: memory stays bounded
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
LEFTOVER_DEADLINE_S = 5.0  # a process that SIGKILL has not ended by then is stuck in the kernel: reported, left


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return f"{stamp.replace('+00:00', 'Z')} {record.name} {record.getMessage()}"


def _pump(stream: IO[bytes], logger: logging.Logger) -> None:
    for raw in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
        logger.info("%s", raw.rstrip(b"\r\n").decode("utf-8", "replace"))


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
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    os.umask(0o077)  # the log files: in portero's private state directory, and private themselves
    handler = logging.handlers.RotatingFileHandler(args.log, maxBytes=args.max_bytes, backupCount=args.backups)
    handler.setFormatter(_Formatter())
    loggers = {}
    for name in ("stdout", "stderr", "portero"):
        logger = loggers[name] = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    if not become_subreaper():
        loggers["portero"].info("not a subreaper (no prctl): processes that leave the app's group may outlive it")
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
        loggers["portero"].info("cannot start %s: %s", command[0] if command else "(empty command)", exc)
        _write_exit(args.exit_file, 127, started, [])
        return 127

    stopping: list[int] = []  # the stop signals relayed: leftovers got theirs with the app's

    def relay(signum: int, _frame: object) -> None:
        stopping.append(signum)
        child.send_signal(signum)
        for pid in _children().get(os.getpid(), []):  # orphans the shim adopted have no parent left to tell them
            if pid != child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, relay)

    assert child.stdout is not None
    assert child.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, loggers["stdout"]), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, loggers["stderr"]), daemon=True),
    ]
    for pump in pumps:
        pump.start()
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
    loggers["portero"].info("process exited with %s after %.1f s", reason, time.time() - started)
    if killed:
        loggers["portero"].info("ended %d process(es) the app left running: %s", len(killed), "; ".join(killed))
    _write_exit(args.exit_file, code, started, killed)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
