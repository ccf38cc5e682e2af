"""Free ports for replicas and tests: chosen outside the kernel's ephemeral range, never one that is bound."""

import socket
from pathlib import Path

import pytest

from portero.runtimes import ports


def ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_a_free_port_is_never_one_the_kernel_gives_outgoing_connections():
    chosen = {ports.free_port() for _ in range(200)}
    assert all(port in ports.LOCAL_PORTS for port in chosen)
    assert not chosen & set(ephemeral_range())
    assert len(chosen) > 150  # spread over the range, not a sequence two daemons would share


def test_a_bound_port_and_an_avoided_one_are_passed_over(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        monkeypatch.setattr(ports, "LOCAL_PORTS", range(busy, busy + 3))
        for _ in range(20):
            assert ports.free_port(avoid={busy + 1}) == busy + 2


def test_no_free_port_is_said_with_the_range(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        monkeypatch.setattr(ports, "LOCAL_PORTS", range(busy, busy + 1))
        with pytest.raises(OSError, match=f"no free port on 127.0.0.1 in {busy}-{busy}"):
            ports.free_port()
