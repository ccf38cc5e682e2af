"""Ports for replicas: free loopback ports (process and docker runtimes), and the swarm runtime's blocks of
host ports, chosen from `docker.swarm.ports` where nothing listens on any node."""

from __future__ import annotations

import socket
from collections.abc import Collection, Iterator, Mapping

LISTEN = "0A"  # the TCP state column of /proc/net/tcp{,6} for a listening socket


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port the kernel says is free now; `avoid` skips ports given to replicas that are still starting."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise OSError(f"no free port on {host} after 50 tries")


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
