"""Ports for replicas: free loopback ports (process and docker runtimes), and the swarm runtime's blocks of
host ports, chosen from `docker.swarm.ports` where nothing listens on any node."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection, Iterator, Mapping

LISTEN = "0A"  # the TCP state column of /proc/net/tcp{,6} for a listening socket
# Where replicas' (and the tests') free ports are chosen: below Linux's ephemeral range (32768-60999), which the
# kernel hands out to outgoing connections. A port the kernel chose with bind(0) is from that range, so between its
# choice and the replica's own bind, any connection on the machine could take it ("Address already in use"); a port
# from here is never taken that way. Below the swarm runtime's default block range (20000-29999) too.
LOCAL_PORTS = range(10000, 20000)
_pick = random.SystemRandom()  # forked test workers and daemons must not share a sequence


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port from LOCAL_PORTS that nothing listens on or is bound to now; `avoid` skips ports given to replicas
    that are still starting."""
    for _ in range(200):
        port = _pick.choice(LOCAL_PORTS)
        if port in avoid:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    raise OSError(f"no free port on {host} in {LOCAL_PORTS.start}-{LOCAL_PORTS.stop - 1} after 200 tries")


def blocks(first: int, last: int, size: int) -> Iterator[int]:
    """The block bases of a range: the replica in slot N (1..size-1) of a block listens on base + N, so a block
    uses base + 1 .. base + size - 1 (`20000-29999` has blocks 20000, 20100, ..., 29900: slot 7 of the first
    listens on 20007) and every port it uses lies within FIRST-LAST."""
    base = first
    while base + size - 1 <= last:
        yield base
        base += size


def choose_block(
    first: int, last: int, size: int, taken: Collection[int], listening: Mapping[str, Collection[int]]
) -> tuple[int | None, dict[int, str]]:
    """The first block of the range that no service holds (`taken`) and in which no node listens, and why each
    block before it was passed over (`{base: reason}`); None when the range has no such block."""
    passed: dict[int, str] = {}
    for base in blocks(first, last, size):
        if base in taken:
            passed[base] = "held by another service revision"
            continue
        busy = sorted((port, node) for node, ports in listening.items() for port in ports if base < port < base + size)
        if busy:
            port, node = busy[0]
            passed[base] = f"port {port} listens on node {node}"
            continue
        return base, passed
    return None, passed


def listening_ports(proc_net_tcp: str) -> set[int]:
    """Local ports in LISTEN state, read from the text of /proc/net/tcp and /proc/net/tcp6 (one after the other)."""
    ports = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].rstrip(":").isdigit() or fields[3] != LISTEN:
            continue
        _, _, port = fields[1].rpartition(":")
        try:
            ports.add(int(port, 16))
        except ValueError:
            continue
    return ports
