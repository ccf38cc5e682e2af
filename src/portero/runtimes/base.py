"""The `Runtime` seam: where a replica runs (a local process, a container, a Swarm task)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from portero.replicas import Exit, Process
from portero.spec.models import ServiceSpec

__all__ = ["Exit", "Launch", "Progress", "Runtime", "RuntimeFailure", "Stats"]

Progress = Callable[[str], Awaitable[None]]  # told what a long preparation does (each build step that runs, the result)


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
    spec: ServiceSpec | None = None  # the revision's template, as `Runtime.prepare` returned it (image, resources)


@dataclass(frozen=True)
class Stats:
    cpu_percent: float  # of one core, summed over the replica's processes (so may exceed 100)
    memory_bytes: int  # resident set size of the replica's processes (a container's: usage less inactive file cache)
    memory_percent: float  # of the host's memory, or of the container's limit when it has one
    processes: int
    app_pid: int | None
    memory_limit_bytes: int | None = None  # a container's limit (the host's memory when it has none)
    net_rx_bytes: int | None = None  # None where the replica has no network namespace of its own (host network)
    net_tx_bytes: int | None = None
    block_read_bytes: int | None = None
    block_write_bytes: int | None = None


class Runtime(Protocol):
    name: str
    kill_wait_s: float  # how long `stop` waits for the end after SIGKILL (`portero down` counts it in)

    async def prepare(self, service: str, spec: ServiceSpec, base_dir: Path, progress: Progress | None) -> ServiceSpec:
        """Make ready what a revision runs, before it becomes desired: the container runtimes build the image and
        return the spec with `image` pinned to it (a new image, a new revision). A `final` failure refuses the
        spec, and nothing running is touched."""
        ...

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

    async def health(self, replica_id: str, process: Process) -> bool | None:
        """The engine's own verdict (a Docker HEALTHCHECK); None when there is none and portero checks over HTTP."""
        ...

    def log_path(self, replica_id: str) -> Path: ...

    async def forget(self, replica_id: str) -> None:
        """Release what the runtime keeps for a replica that is gone for good."""
        ...

    async def reap_strays(self, known: set[str]) -> list[str]:
        """Stop replicas of this portero that no record knows (it died between starting and saving them)."""
        ...
