"""The docker runtime: each replica a container on the Docker Engine, built and watched by portero.

Theory of operation. `prepare` builds the service's image before its revision becomes desired; the revision's
template then names the image by content (`portero/SERVICE:ID12`), so a changed image is a new revision and a
failed build refuses the spec while what runs keeps running. `start` creates a container named
`portero-INSTANCE-REPLICA`, labelled with the service, revision, replica and the state directory's id
(`portero.instance`), with the spec's CPU and memory limits and *no* restart policy: the supervisor restarts,
with its backoff and its event log, exactly as for processes. With `docker.network: host` the container shares
the host's network and gets its own free loopback port as `PORT`; with `bridge` it listens on the spec's `port`,
published on a free port of 127.0.0.1. A replica is identified by its container's name *and* creation time (the
`started_token`), as a process by pid and start time, so a container re-created under the same name is a
stranger. Output is copied from the Engine's log API into the same per-replica log file the shim writes, and
stats come from the Engine's stats API, computed as `docker stats` does.

Containers without portero's labels, or with another state directory's id, are never stopped or removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path
from string import Template
from typing import Any

import docker.errors
from docker import DockerClient

from portero.replicas import Process
from portero.runtimes import ladder
from portero.runtimes.accounts import container_user
from portero.runtimes.base import Exit, Launch, Progress, RuntimeFailure, Stats
from portero.runtimes.engine import (
    LABEL_INSTANCE,
    LABEL_REPLICA,
    LABEL_REVISION,
    LABEL_SERVICE,
    Engine,
    LogFollower,
    StatsSampler,
    instance_id,
    parse_time,
    prepare_image,
)
from portero.runtimes.ports import free_port
from portero.spec.models import DockerSettings, ServiceSpec

log = logging.getLogger(__name__)
POLL_S = 0.1
LISTING_TTL_S = 0.15  # one container listing serves every poll of a supervisor pass (tick 0.2 s)


class EngineRuntime:
    """State and habits both container runtimes share: the Engine, the instance id, logs, stats, builds."""

    name = "engine"

    def __init__(
        self,
        state_dir: Path,
        settings: DockerSettings,
        *,
        host: str = "127.0.0.1",
        log_max_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.root = state_dir.resolve() / "replicas"
        self.instance = instance_id(state_dir)
        self.engine = Engine(settings)
        self.settings = settings
        self.kill_wait_s = settings.kill_wait_s  # the stop ladder's last rung; `portero down` counts it in
        self.host = host
        self.log_max_bytes = log_max_bytes
        self.sampler = StatsSampler()
        self._followers: dict[str, LogFollower] = {}

    def log_path(self, replica_id: str) -> Path:
        return self.root / replica_id / "replica.log"

    async def prepare(self, service: str, spec: ServiceSpec, base_dir: Path, progress: Progress | None) -> ServiceSpec:
        return await prepare_image(self.engine, service, spec, base_dir, self.instance, progress)

    def _follow(self, replica_id: str, container: str, *, engine: Engine | None = None) -> None:
        """Copy a container's output into the replica log, from where the log file ends; `engine` is the one
        that runs it (a Swarm node's), portero's own by default."""
        self._unfollow(replica_id)
        on = engine or self.engine
        follower = LogFollower(
            on,
            container,
            self.log_path(replica_id),
            self.log_max_bytes,
            lambda: self._describe_end(on, container),
        )
        self._followers[replica_id] = follower
        follower.start()

    def _unfollow(self, replica_id: str) -> None:
        follower = self._followers.pop(replica_id, None)
        if follower is not None:
            follower.stop()

    def _describe_end(self, engine: Engine, container: str) -> str | None:
        state = engine.client().api.inspect_container(container)["State"]
        if state.get("Running"):
            return None
        return f"container exited with {describe(exit_of(state))}"

    async def _container_stats(
        self, replica_id: str, container: str, pid: int | None, *, engine: Engine | None = None
    ) -> Stats:
        return await (engine or self.engine).call(
            f"stats of replica {replica_id}", lambda c: self.sampler.measure(c, replica_id, container, pid)
        )

    async def _container_health(self, replica_id: str, container: str, *, engine: Engine | None = None) -> bool | None:
        def read(client: DockerClient) -> bool | None:
            state = client.api.inspect_container(container)["State"]
            health = state.get("Health")
            if not health:
                return None  # the image has no HEALTHCHECK: portero's HTTP check decides
            return bool(health.get("Status") == "healthy")

        return await (engine or self.engine).call(f"health of replica {replica_id}", read)

    async def _drop_local(self, replica_id: str) -> None:
        self._unfollow(replica_id)
        self.sampler.forget(replica_id)
        await asyncio.to_thread(shutil.rmtree, self.root / replica_id, True)


class DockerRuntime(EngineRuntime):
    name = "docker"

    def __init__(
        self,
        state_dir: Path,
        settings: DockerSettings,
        *,
        host: str = "127.0.0.1",
        log_max_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        super().__init__(state_dir, settings, host=host, log_max_bytes=log_max_bytes)
        self._ports: dict[str, int] = {}  # given to live replicas; never handed out twice
        self._listing: tuple[float, dict[str, dict[str, Any]]] | None = None

    def container_name(self, replica_id: str) -> str:
        return f"portero-{self.instance}-{replica_id}"

    def _labels(self, launch: Launch) -> dict[str, str]:
        return {
            LABEL_SERVICE: launch.service,
            LABEL_REVISION: str(launch.revision),
            LABEL_REPLICA: launch.replica_id,
            LABEL_INSTANCE: self.instance,
        }

    # -- start ---------------------------------------------------------------------------------------------

    async def start(self, launch: Launch) -> Process:
        spec = launch.spec
        if spec is None or spec.image is None:
            raise RuntimeFailure(
                f"replica {launch.replica_id}: no image (services.{launch.service}.image or .build)", retryable=False
            )
        try:
            port = free_port(self.host, avoid=set(self._ports.values()))
        except OSError as exc:
            raise RuntimeFailure(f"no free port for replica {launch.replica_id}: {exc}", retryable=True) from exc
        host_network = self.settings.network == "host"
        env = {
            **launch.env,
            "PORT": str(port if host_network else spec.port),
            "PORTERO_REPLICA_ID": launch.replica_id,
            "PORTERO_SERVICE": launch.service,
            "PORTERO_REVISION": str(launch.revision),
        }
        options: dict[str, Any] = {
            "name": self.container_name(launch.replica_id),
            "command": [Template(arg).safe_substitute(env) for arg in launch.command] or None,
            "environment": env,
            "labels": self._labels(launch),
            "detach": True,
        }
        if host_network:
            options["network_mode"] = "host"
        else:
            options["ports"] = {f"{spec.port}/tcp": (self.host, port)}
        if spec.user is not None:
            options["user"] = container_user(spec)  # the image's /etc/passwd decides what the name means
        if spec.resources.cpus is not None:
            options["nano_cpus"] = int(spec.resources.cpus * 1e9)
        if spec.resources.memory_mib is not None:
            options["mem_limit"] = spec.resources.memory_mib * 1024 * 1024
        image = spec.image

        def create(client: DockerClient) -> dict[str, Any]:
            self._remove_previous(client, options["name"])
            container = client.containers.create(image, **options)
            try:
                container.start()
            except docker.errors.APIError:
                container.remove(force=True)
                raise
            container.reload()
            attrs: dict[str, Any] = container.attrs
            return attrs

        attrs = await self.engine.call(f"start of replica {launch.replica_id} ({image})", create)
        self._ports[launch.replica_id] = port
        self._listing = None
        self._follow(launch.replica_id, attrs["Id"])
        token = parse_time(attrs["Created"])
        return Process(host=self.host, port=port, pid=int(attrs["State"].get("Pid") or 0), started_token=token)

    def _remove_previous(self, client: DockerClient, name: str) -> None:
        """The replica's container from before a restart (same name): removed, unless it is not portero's."""
        try:
            old = client.api.inspect_container(name)
        except docker.errors.NotFound:
            return
        if not self._ours(old):
            raise RuntimeFailure(f"a container named {name} exists and is not this portero's", retryable=False)
        client.api.remove_container(name, force=True)

    def _ours(self, attrs: dict[str, Any]) -> bool:
        labels = attrs.get("Config", {}).get("Labels") or attrs.get("Labels") or {}
        return bool(labels.get(LABEL_INSTANCE) == self.instance and LABEL_REPLICA in labels)

    # -- watch ---------------------------------------------------------------------------------------------

    async def _inspect(self, replica_id: str) -> dict[str, Any] | None:
        name = self.container_name(replica_id)

        def inspect(client: DockerClient) -> dict[str, Any] | None:
            try:
                attrs: dict[str, Any] = client.api.inspect_container(name)
            except docker.errors.NotFound:
                return None
            return attrs if self._ours(attrs) else None

        return await self.engine.call(f"inspect of replica {replica_id}", inspect)

    async def _listed(self) -> dict[str, dict[str, Any]]:
        """This instance's containers by name, listed at most once per LISTING_TTL_S."""
        now = time.monotonic()
        if self._listing is not None and now - self._listing[0] < LISTING_TTL_S:
            return self._listing[1]

        def listing(client: DockerClient) -> dict[str, dict[str, Any]]:
            found = client.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance}"})
            return {name.lstrip("/"): entry for entry in found for name in entry.get("Names") or []}

        containers = await self.engine.call("list of containers", listing)
        self._listing = (now, containers)
        return containers

    async def poll(self, replica_id: str, process: Process) -> Exit | None:
        entry = (await self._listed()).get(self.container_name(replica_id))
        if (
            entry is not None
            and entry.get("State") == "running"
            and int(entry.get("Created", 0)) == int(process.started_token)
        ):
            return None
        return await self._ended(replica_id, process)

    async def _ended(self, replica_id: str, process: Process) -> Exit | None:
        attrs = await self._inspect(replica_id)
        if attrs is None or parse_time(attrs["Created"]) != process.started_token:
            self._ports.pop(replica_id, None)
            return Exit(code=-1)  # gone while no portero watched it, or replaced: described as unknown
        if attrs["State"].get("Running"):
            return None
        self._ports.pop(replica_id, None)
        return exit_of(attrs["State"])

    async def adopt(self, replica_id: str, process: Process) -> bool:
        attrs = await self._inspect(replica_id)
        if attrs is None or parse_time(attrs["Created"]) != process.started_token or not attrs["State"]["Running"]:
            return False
        self._ports[replica_id] = process.port
        self._follow(replica_id, attrs["Id"])
        return True

    async def stats(self, replica_id: str, process: Process) -> Stats:
        return await self._container_stats(replica_id, self.container_name(replica_id), process.pid)

    async def health(self, replica_id: str, process: Process) -> bool | None:
        return await self._container_health(replica_id, self.container_name(replica_id))

    # -- stop ----------------------------------------------------------------------------------------------

    async def stop(self, replica_id: str, process: Process, grace_s: float) -> Exit | None:
        """The stop ladder: the image's stop signal (SIGTERM by default), `grace_s`, then SIGKILL."""
        attrs = await self._inspect(replica_id)
        if attrs is None or not attrs["State"].get("Running"):
            return await self._ended(replica_id, process)
        name = self.container_name(replica_id)

        async def send(action: str) -> None:
            with contextlib.suppress(RuntimeFailure):  # it may have ended meanwhile; the wait tells
                await self.engine.call(f"{action} to replica {replica_id}", lambda c: c.api.kill(name, signal=action))

        return await ladder.climb(
            replica_id,
            ladder.ladder(attrs.get("Config", {}).get("StopSignal") or "SIGTERM", grace_s, self.kill_wait_s),
            send,
            lambda: self._ended(replica_id, process),
            what=f"container {name}",
            interval=POLL_S,
        )

    async def forget(self, replica_id: str) -> None:
        self._ports.pop(replica_id, None)
        name = self.container_name(replica_id)

        def remove(client: DockerClient) -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._remove_previous(client, name)

        await self.engine.call(f"removal of replica {replica_id}", remove)
        await self._drop_local(replica_id)

    async def reap_strays(self, known: set[str]) -> list[str]:
        """This instance's containers that no record knows (portero died between creating and saving them)."""

        def reap(client: DockerClient) -> list[str]:
            found = client.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance}"})
            strays = []
            for entry in found:
                replica = (entry.get("Labels") or {}).get(LABEL_REPLICA)
                if replica and replica not in known:
                    client.api.remove_container(entry["Id"], force=True)
                    strays.append(replica)
            return strays

        strays = await self.engine.call("removal of stray containers", reap)
        for replica in strays:
            await self._drop_local(replica)
        return strays


def exit_of(state: dict[str, Any]) -> Exit:
    """How a container ended; 128 + N is read as signal N (the Engine reports a SIGKILL as 137)."""
    code = int(state.get("ExitCode", -1))
    ran = None
    with contextlib.suppress(KeyError, ValueError):
        ran = round(max(0.0, parse_time(state["FinishedAt"]) - parse_time(state["StartedAt"])), 3)
    if state.get("OOMKilled"):
        return Exit(code=137, signal=9, ran_s=ran)
    return Exit(code=code, signal=code - 128 if 128 < code < 160 else None, ran_s=ran)


def describe(ended: Exit) -> str:
    reason = f"signal {ended.signal}" if ended.signal is not None else f"code {ended.code}"
    return reason + (f" after {ended.ran_s:.1f} s" if ended.ran_s is not None else "")
