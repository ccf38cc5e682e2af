"""The `Runtime` seam: where a replica runs (a local process, a container, a Swarm task)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from portero.replicas import Exit, Process

__all__ = ["Exit", "Launch", "Runtime", "RuntimeFailure", "Stats"]


class RuntimeFailure(Exception):
    """A failure classified once, at the runtime's edge: `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Launch:
    replica_id: str
    service: str
    revision: int
    command: tuple[str, ...]
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    container_port: int = 5000


@dataclass(frozen=True)
class Stats:
    cpu_percent: float  # of one core, summed over the replica's processes (so may exceed 100)
    memory_bytes: int  # resident set size of the replica's processes
    memory_percent: float  # of the host's memory
    processes: int
    app_pid: int | None


class Runtime(Protocol):
    name: str

    async def start(self, launch: Launch) -> Process: ...

    async def stop(self, replica_id: str, process: Process, grace_s: float) -> Exit | None:
        """Ask it to stop, wait up to `grace_s`, then kill it; returns how it ended, if known."""
        ...

    async def poll(self, replica_id: str, process: Process) -> Exit | None:
        """None while it runs; how it ended once it has."""
        ...

    async def adopt(self, replica_id: str, process: Process) -> bool:
        """True when the recorded process is still the same one running (after a restart of portero)."""
        ...

    async def stats(self, replica_id: str, process: Process) -> Stats: ...

    def log_path(self, replica_id: str) -> Path: ...

    async def forget(self, replica_id: str) -> None:
        """Release what the runtime keeps for a replica that is gone for good."""
        ...

    async def reap_strays(self, known: set[str]) -> list[str]:
        """Stop replicas of this portero that no record knows (it died between starting and saving them)."""
        ...
