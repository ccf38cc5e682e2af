"""Replica shim: the small parent that owns a replica's output, so portero can die without the app noticing.

Like containerd's shim or conmon, it sits between portero and the app: it leads the replica's process group,
relays SIGTERM to the app, writes every line the app prints to a size-bounded rotating log with a timestamp,
and records the exit status in a file that a restarted portero can still read. A pipe to portero itself
was rejected: a SIGKILLed portero would break it and take the app down on its next write.

Stdlib only, and nothing from portero: it starts once per replica and should start fast.
"""

from __future__ import annotations

import argparse
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


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return f"{stamp.replace('+00:00', 'Z')} {record.name} {record.getMessage()}"


def _pump(stream: IO[bytes], logger: logging.Logger) -> None:
    for raw in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
        logger.info("%s", raw.rstrip(b"\r\n").decode("utf-8", "replace"))


def _write_exit(path: str, code: int, started: float) -> None:
    status: dict[str, float | None] = {"code": code if code >= 0 else 128 - code, "signal": -code if code < 0 else None}
    status |= {"at": time.time(), "ran_s": round(time.time() - started, 3)}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(status, handle)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portero-shim")
    parser.add_argument("--log", required=True)
    parser.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--backups", type=int, default=3)
    parser.add_argument("--exit-file", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    handler = logging.handlers.RotatingFileHandler(args.log, maxBytes=args.max_bytes, backupCount=args.backups)
    handler.setFormatter(_Formatter())
    loggers = {}
    for name in ("stdout", "stderr", "portero"):
        logger = loggers[name] = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    started = time.time()
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        loggers["portero"].info("cannot start %s: %s", command[0] if command else "(empty command)", exc)
        _write_exit(args.exit_file, 127, started)
        return 127

    def relay(signum: int, _frame: object) -> None:
        child.send_signal(signum)

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
    code = child.wait()
    # An orphaned worker may hold the pipes open: report the exit after a moment for the last lines, not after
    # the orphan (portero kills the group once it sees the exit). Fix: 0.3 s per pipe held up every restart of a
    # killed gunicorn master by 0.6 s, so its endpoint stayed in rotation that much longer.
    flushed_by = time.monotonic() + 0.05
    for pump in pumps:
        pump.join(timeout=max(0.0, flushed_by - time.monotonic()))
    reason = f"signal {-code}" if code < 0 else f"code {code}"
    loggers["portero"].info("process exited with %s after %.1f s", reason, time.time() - started)
    _write_exit(args.exit_file, code, started)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
