"""The router's listening sockets: one per worker on the same address (SO_REUSEPORT), held open by the parent.

Why one socket per worker: the kernel spreads new connections over the sockets of a reuseport group by a hash of
their addresses, so every worker gets its share. With one socket shared by every worker, the worker that woke
first accepted nearly everything (42 of 50 keep-alive clients on one of two workers), and every new connection woke
every worker. Why the parent holds them: a worker that dies or is replaced leaves its socket open, so connections
queued on it wait for the worker that takes its place (the spare: milliseconds) instead of being refused.

SO_REUSEPORT would also let a second program bind the same port unnoticed, so a group is only made after a plain
bind of the address succeeded: a port someone else holds is refused as it always was.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger("portero.router.parent")
BACKLOG = 4096
MIGRATE = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def group(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets of one reuseport group on host:port; OSError (with its errno) if the address is
    taken or cannot be bound."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)  # fails if anybody listens there, reuseport or not
    finally:
        probe.close()
    made: list[socket.socket] = []
    try:
        for _ in range(count):
            made.append(member(family, kind, proto, address))
    except OSError:
        for sock in made:
            sock.close()
        raise
    return made


def grow(existing: list[socket.socket], count: int) -> list[socket.socket]:
    """More members for a group (more workers): bound to the same address as the first."""
    first = existing[0]
    address = first.getsockname()
    return [member(first.family, first.type, first.proto, address) for _ in range(count)]


def member(family: int, kind: int, proto: int, address: tuple[Any, ...] | str) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        sock.set_inheritable(True)  # every worker is started with the ones it serves
    except OSError:
        sock.close()
        raise
    return sock


def allow_migration() -> None:
    """Linux 5.14+: connections queued on a socket of the group that closes move to another member instead of
    being reset (fewer workers, another address). A host setting: set when portero may, said when it may not."""
    try:
        if MIGRATE.read_text().strip() != "1":
            MIGRATE.write_text("1\n")
            log.info("net.ipv4.tcp_migrate_req set to 1: a listening socket that closes hands its queue on")
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        log.info("cannot set net.ipv4.tcp_migrate_req (%s): fewer workers may reset a few queued connections", exc)
