"""The swarm runtime: each replica a Docker Swarm service of one task, on whichever node Swarm places it.

Theory of operation.

- A replica is a replicated Swarm service of one replica, `portero-INSTANCE-REPLICA`, labelled with the
  service, revision, replica, the state directory's id, its port block and its slot, with restart policy `none`:
  the supervisor restarts, with its backoff and its event log. One service per replica, not one per revision
  with a count: Swarm cannot be told *which* task to drop when a count goes down. It drops a non-running task
  only on a node as loaded as the others, and a task on a dead node looks running for good, so on several nodes
  giving one replica's place back by a scale-down could stop another replica. With a service per replica a stop
  is exact, and Swarm's scheduler still spreads the replicas (it puts each new task on the node with fewest).
- Ports: tasks share their node's network. A revision's replicas share a block of 100 host ports from
  `docker.swarm.ports`; the replica in slot N listens on block + N, given as `PORT`. A revision's first replica
  takes the first block that no portero service on the swarm holds and in which nothing listens on any node:
  a global job (one task per node, of the revision's own image: `cat /proc/net/tcp /proc/net/tcp6`) reads the
  listening sockets of every node before the block is used.
- Addresses: a task answers on its node's address (`nodes.address`: a manager's advertise address, since its
  `Status.Addr` may be 0.0.0.0 or 127.0.0.1; a worker's `Status.Addr`).
- Engines: the manager's (`docker.host`) creates, lists and removes services. A task's stats, logs,
  HEALTHCHECK and stop ladder go to the Engine of its node (`nodes.engine_url`: `docker.swarm.engines`, else the
  node's `portero.engine` label; the manager's own node falls back to `docker.host`). A task on a node whose
  Engine portero cannot reach has none of those, and is stopped by Swarm (its service scaled to 0, stopped with
  the service's grace period), which reports the exit a few seconds later than the node's Engine would.
- A node that dies: Swarm marks it down after missed heartbeats and sets its tasks' desired state to shutdown
  (their last observed state stays `running`); `poll` reports them ended (status unknown), and the supervisor
  starts them again: Swarm places the new services on the nodes that live. The router has taken them out of
  rotation long before, at their first refused connection.
- Images: `prepare` builds on the manager's Engine and, when `image` names a registry, tags the build with it
  and pushes it; the revision runs the pushed reference pinned by digest, which each node pulls with the
  registry credentials of portero's Docker config (the SDK sends them along with the service, as
  `docker service create --with-registry-auth` does). A build that is not pushed runs on a one-node swarm only.

A replica is identified by its service and its task's creation time (the `started_token`), so a task of a
re-created service is a stranger. Only services labelled with this state directory's id are touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import docker.errors
from docker import DockerClient
from docker.types import (
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    RollbackConfig,
    ServiceMode,
    UpdateConfig,
)

from portero.replicas import Process
from portero.runtimes import ladder, nodes
from portero.runtimes.accounts import container_user
from portero.runtimes.base import Exit, Launch, Progress, RuntimeFailure, Stats
from portero.runtimes.docker import EngineRuntime, describe, exit_of
from portero.runtimes.engine import (
    LABEL_INSTANCE,
    LABEL_REPLICA,
    LABEL_REVISION,
    LABEL_SERVICE,
    Engine,
    parse_time,
    prepare_image,
    registry_digest,
    registry_of,
)
from portero.runtimes.ports import choose_block, listening_ports
from portero.spec.models import PORT_BLOCK, DockerSettings, ServiceSpec

log = logging.getLogger(__name__)
LABEL_BLOCK = "portero.port-block"
LABEL_SLOT = "portero.slot"
LABEL_PORT_CHECK = "portero.port-check"  # the global job that reads the nodes' listening ports
POLL_S = 0.1
LISTING_TTL_S = 0.15  # one task listing serves every poll of a supervisor pass (tick 0.2 s)
NODES_TTL_S = 1.0
ALIVE = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}
PORT_CHECK = ["cat", "/proc/net/tcp", "/proc/net/tcp6"]


@dataclass(frozen=True)
class Placed:
    """Where a replica runs: its Swarm service, its task, that task's node (ID) and container."""

    service: str
    task: str
    node: str
    container: str | None


class SwarmRuntime(EngineRuntime):
    name = "swarm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._placed: dict[str, Placed] = {}
        self._revision_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._choosing = asyncio.Lock()  # one new port block at a time: chosen, then held by a service
        self._tasks: tuple[float, list[dict[str, Any]]] | None = None
        self._nodes: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._manager_node: str | None = None
        self._engines: dict[str, Engine] = {}
        self._images: set[str] = set()  # checked: on the manager, or in their registry

    def service_name(self, replica_id: str) -> str:
        return f"portero-{self.instance}-{replica_id}"

    async def prepare(self, service: str, spec: ServiceSpec, base_dir: Path, progress: Progress | None) -> ServiceSpec:
        prepared = await prepare_image(self.engine, service, spec, base_dir, self.instance, progress, push=True)
        if spec.build is not None and prepared.image is not None and registry_of(prepared.image) is None:
            count = len(await self._node_map(fresh=True))
            if count > 1:
                raise RuntimeFailure(
                    f"services.{service}.image: the swarm has {count} nodes and an image built from `build` exists "
                    "only on the manager: set `image: REGISTRY/NAME` (portero tags the build with it and pushes "
                    "it, and every node pulls it)",
                    retryable=False,
                )
        return prepared

    # -- start -----------------------------------------------------------------------------------------------

    async def start(self, launch: Launch) -> Process:
        spec = launch.spec
        if spec is None or spec.image is None:
            raise RuntimeFailure(
                f"replica {launch.replica_id}: no image (services.{launch.service}.image or .build)", retryable=False
            )
        image = spec.image
        if image not in self._images:
            await self.engine.call(f"image {image}", lambda c: _image_known(c, image))
            self._images.add(image)
        name = self.service_name(launch.replica_id)
        key = (launch.service, launch.revision)
        async with self._revision_locks.setdefault(key, asyncio.Lock()):
            block, slot = await self.engine.call(
                f"ports of replica {launch.replica_id}", lambda c: self._claim(c, launch, name)
            )
            if block is None:  # the revision's first replica: a new block, held once its service exists
                async with self._choosing:
                    block = await self._choose_block(image)
                    await self.engine.call(f"service {name}", lambda c: self._create(c, name, launch, block, slot))
            else:
                await self.engine.call(f"service {name}", lambda c: self._create(c, name, launch, block, slot))
        task = await self._running(name)
        self._tasks = None
        node = await self._node(task["NodeID"])
        try:
            host = nodes.address(node)
        except nodes.NodeAddressError as exc:
            await self._remove(name)
            raise RuntimeFailure(f"replica {launch.replica_id}: {exc}", retryable=False) from exc
        status = task["Status"].get("ContainerStatus") or {}
        placed = Placed(name, task["ID"], task["NodeID"], status.get("ContainerID"))
        self._placed[launch.replica_id] = placed
        log.info(
            "replica %s is task %s on node %s, %s:%d",
            launch.replica_id,
            task["ID"][:12],
            nodes.hostname(node),
            host,
            block + slot,
            extra={"replica": launch.replica_id},
        )
        engine = await self._engine_of(placed.node)
        if engine is not None and placed.container:
            self._follow(launch.replica_id, placed.container, engine=engine)
        return Process(
            host=host,
            port=block + slot,
            pid=int(status.get("PID") or 0),
            started_token=parse_time(task["CreatedAt"]),
            node=nodes.hostname(node),
        )

    def _claim(self, client: DockerClient, launch: Launch, name: str) -> tuple[int | None, int]:
        """The replica's port block and slot: its revision's block (None for the revision's first replica), and
        the slot of its previous life (whose service goes now) or the lowest one no other replica holds."""
        labels = [f"{LABEL_INSTANCE}={self.instance}", f"{LABEL_SERVICE}={launch.service}"]
        block, own, used = None, None, set()
        for found in client.api.services(filters={"label": [*labels, f"{LABEL_REVISION}={launch.revision}"]}):
            held = found["Spec"].get("Labels") or {}
            with contextlib.suppress(KeyError, ValueError):
                block = int(held[LABEL_BLOCK])
                if found["Spec"]["Name"] == name:
                    own = int(held[LABEL_SLOT])
                    client.api.remove_service(found["ID"])
                else:
                    used.add(int(held[LABEL_SLOT]))
        if own is not None and own not in used:
            return block, own
        slot = next((n for n in range(1, PORT_BLOCK) if n not in used), None)
        if slot is None:
            raise RuntimeFailure(
                f"revision {launch.revision} of {launch.service} has {PORT_BLOCK - 1} replicas, all a port block "
                "of docker.swarm.ports holds",
                retryable=False,
            )
        return block, slot

    async def _choose_block(self, image: str) -> int:
        """The first block of `docker.swarm.ports` that no service of any portero on the swarm holds and in
        which nothing listens on any node."""
        taken = await self.engine.call("ports held by swarm services", _held_blocks)
        listening = await self._listening(image)
        first, last = self.settings.swarm.port_range
        block, passed = choose_block(first, last, PORT_BLOCK, taken, listening)
        for base, why in passed.items():
            if base not in taken:
                log.info("ports %d-%d passed over: %s", base + 1, base + PORT_BLOCK - 1, why)
        if block is None:
            raise RuntimeFailure(
                f"no free block of {PORT_BLOCK} ports in docker.swarm.ports {self.settings.swarm.ports}: "
                f"{len(taken)} held by services, {len(passed) - len(taken)} in use on a node; widen the range",
                retryable=True,
            )
        log.info(
            "ports %d-%d free on %d node(s) (%s)",
            block + 1,
            block + PORT_BLOCK - 1,
            len(listening),
            ", ".join(sorted(listening)),
        )
        return block

    async def _listening(self, image: str) -> dict[str, set[int]]:
        """Every schedulable node's listening TCP ports, by hostname, read by a global job of the image."""
        name = f"portero-{self.instance}-ports-{secrets.token_hex(3)}"

        def start_check(client: DockerClient) -> dict[str, Any]:
            expected = {n["ID"]: n for n in client.api.nodes() if nodes.schedulable(n)}
            client.services.create(
                image,
                command=PORT_CHECK,
                name=name,
                labels={LABEL_PORT_CHECK: self.instance},
                networks=[NetworkAttachmentConfig("host")],
                mode=ServiceMode("global-job"),
                restart_policy=RestartPolicy(condition="none"),
            )
            return expected

        def output(client: DockerClient) -> bytes:
            return b"".join(client.api.service_logs(name, stdout=True, stderr=True, details=True, follow=False))

        expected = await self.engine.call("the check of free ports", start_check)
        try:
            ended = await self._job_ended(name, expected)
            raw = await self.engine.call("the output of the check of free ports", output)
        finally:
            with contextlib.suppress(RuntimeFailure):
                await self._remove(name)
        return _ports_by_node(image, expected, ended, raw)

    async def _job_ended(self, name: str, expected: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The job's task on each expected node, once every one has ended."""
        ended: dict[str, dict[str, Any]] = {}

        async def check() -> dict[str, dict[str, Any]] | None:
            tasks = await self.engine.call(f"tasks of {name}", lambda c: c.api.tasks(filters={"service": name}))
            ended.clear()
            ended.update({t["NodeID"]: t for t in tasks if t["Status"]["State"] not in ALIVE})
            return ended if set(expected) <= set(ended) else None

        timeout_s = self.settings.swarm.task_timeout_s
        if await ladder.poll_until(ladder.Deadline.within(timeout_s), check, POLL_S * 2) is None:
            missing = sorted(nodes.hostname(expected[n]) for n in set(expected) - set(ended))
            raise RuntimeFailure(
                f"the check of free ports did not end on {', '.join(missing)} within {timeout_s:g} s "
                "(docker.swarm.task_timeout_s)",
                retryable=True,
            )
        return ended

    def _create(self, client: DockerClient, name: str, launch: Launch, block: int, slot: int) -> None:
        spec = launch.spec
        assert spec is not None
        assert spec.image is not None
        env = {
            **launch.env,
            "PORT": str(block + slot),
            "PORTERO_REPLICA_ID": launch.replica_id,
            "PORTERO_SERVICE": launch.service,
            "PORTERO_REVISION": str(launch.revision),
        }
        labels = {
            LABEL_SERVICE: launch.service,
            LABEL_REVISION: str(launch.revision),
            LABEL_REPLICA: launch.replica_id,
            LABEL_INSTANCE: self.instance,
            LABEL_BLOCK: str(block),
            LABEL_SLOT: str(slot),
        }
        nano_cpus = int(spec.resources.cpus * 1e9) if spec.resources.cpus else None
        memory = spec.resources.memory_mib * 1024 * 1024 if spec.resources.memory_mib else None
        swarm = self.settings.swarm
        delay, monitor = int(swarm.update_delay_s * 1e9), int(swarm.update_monitor_s * 1e9)
        update = UpdateConfig(
            parallelism=swarm.update_parallelism,
            delay=delay,
            failure_action=swarm.update_failure_action,
            monitor=monitor,
            order=swarm.update_order,
        )
        rollback = RollbackConfig(
            parallelism=swarm.update_parallelism, delay=delay, monitor=monitor, order=swarm.update_order
        )
        client.services.create(
            spec.image,
            command=[Template(arg).safe_substitute(env) for arg in launch.command] or None,
            name=name,
            env=[f"{key}={value}" for key, value in env.items()],
            labels=labels,
            container_labels=labels,
            networks=[NetworkAttachmentConfig("host")],
            mode=ServiceMode("replicated", replicas=1),
            restart_policy=RestartPolicy(condition="none"),
            update_config=update,
            rollback_config=rollback,
            resources=Resources(cpu_limit=nano_cpus, mem_limit=memory),
            stop_grace_period=int(spec.stop_grace_s * 1e9),
            user=container_user(spec),
        )

    async def _running(self, name: str) -> dict[str, Any]:
        """The service's task, once it runs; a task that fails or does not run in time takes its service along."""

        async def check() -> dict[str, Any] | None:
            tasks = await self.engine.call(f"tasks of {name}", lambda c: c.api.tasks(filters={"service": name}))
            for task in tasks:
                state = task["Status"]["State"]
                if state == "running" or _ran(task):
                    return dict(task)  # one that ran and ended already is a crash, for poll to report
                if state not in ALIVE:
                    error = task["Status"].get("Err") or task["Status"].get("Message") or state
                    await self._remove(name)
                    raise RuntimeFailure(f"swarm task of {name} {state}: {error}", retryable=True)
            return None

        timeout_s = self.settings.swarm.task_timeout_s
        task = await ladder.poll_until(ladder.Deadline.within(timeout_s), check, POLL_S)
        if task is None:
            await self._remove(name)
            raise RuntimeFailure(
                f"no task of {name} running after {timeout_s:g} s (docker.swarm.task_timeout_s)", retryable=True
            )
        return task

    # -- nodes -----------------------------------------------------------------------------------------------

    async def _node_map(self, *, fresh: bool = False) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        if not fresh and self._nodes is not None and now - self._nodes[0] < NODES_TTL_S:
            return self._nodes[1]
        found = await self.engine.call("list of swarm nodes", lambda c: {n["ID"]: n for n in c.api.nodes()})
        self._nodes = (now, found)
        return found

    async def _node(self, node_id: str) -> dict[str, Any]:
        node = (await self._node_map()).get(node_id) or (await self._node_map(fresh=True)).get(node_id)
        if node is None:
            raise RuntimeFailure(f"swarm node {node_id[:12]} is gone", retryable=True)
        return node

    async def _engine_of(self, node_id: str) -> Engine | None:
        """The Engine that runs the node's tasks, or None where portero has no way to it."""
        node = (await self._node_map()).get(node_id)
        if node is None:
            return None
        url = nodes.engine_url(node, self.settings.swarm.engines)
        if url is None or url == self.settings.host:
            if self._manager_node is None:
                self._manager_node = await self.engine.call("this node", lambda c: str(c.info()["Swarm"]["NodeID"]))
            return self.engine if node_id == self._manager_node else None
        engine = self._engines.get(url)
        if engine is None:
            settings = DockerSettings(host=url, api_version=self.settings.api_version)
            engine = self._engines[url] = Engine(settings, timeout_s=self.settings.swarm.engine_timeout_s)
        return engine

    async def _unreachable(self, placed: Placed) -> str:
        node = (await self._node_map()).get(placed.node)
        where = nodes.hostname(node) if node is not None else placed.node[:12]
        return (
            f"node {where}, whose Engine portero does not reach: list it in docker.swarm.engines or label it "
            f"{nodes.ENGINE_LABEL}=URL"
        )

    # -- watch -----------------------------------------------------------------------------------------------

    async def _all_tasks(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        if not fresh and self._tasks is not None and now - self._tasks[0] < LISTING_TTL_S:
            return self._tasks[1]

        def listing(client: DockerClient) -> list[dict[str, Any]]:
            ours = client.api.services(filters={"label": f"{LABEL_INSTANCE}={self.instance}"})
            names = {s["ID"]: s["Spec"]["Name"] for s in ours}
            if not names:
                return []
            tasks = client.api.tasks(filters={"service": list(names)})
            return [{**t, "ServiceName": names[t["ServiceID"]]} for t in tasks if t.get("ServiceID") in names]

        tasks = await self.engine.call("list of swarm tasks", listing)
        self._tasks = (now, tasks)
        return tasks

    async def _find(self, replica_id: str, process: Process, *, fresh: bool = False) -> dict[str, Any] | None:
        """The replica's task: by its placed id, or (after a restart of portero) by service and creation time."""
        tasks = await self._all_tasks(fresh=fresh)
        placed = self._placed.get(replica_id)
        if placed is not None:
            return next((t for t in tasks if t["ID"] == placed.task), None)
        name, token = self.service_name(replica_id), process.started_token
        mine = (t for t in tasks if t["ServiceName"] == name and t.get("CreatedAt"))
        return next((t for t in mine if parse_time(t["CreatedAt"]) == token), None)

    async def poll(self, replica_id: str, process: Process) -> Exit | None:
        task = await self._find(replica_id, process)
        if task is not None and _alive(task):
            return None
        return await self._ended(replica_id, task)

    async def _ended(self, replica_id: str, task: dict[str, Any] | None) -> Exit:
        self._placed.pop(replica_id, None)
        if task is None:
            return Exit(code=-1)  # its service is gone: removed while no portero watched it
        if task["Status"]["State"] in ALIVE:  # Swarm wants it shut down, and its node will never say it is
            node = (await self._node_map(fresh=True)).get(task["NodeID"])
            where = nodes.hostname(node) if node is not None else task["NodeID"][:12]
            state = (node or {}).get("Status", {}).get("State", "gone")
            log.warning(
                "replica %s: its node %s is %s; its task counts as ended",
                replica_id,
                where,
                state,
                extra={"replica": replica_id},
            )
            return Exit(code=-1)
        code = int((task["Status"].get("ContainerStatus") or {}).get("ExitCode", -1))
        return Exit(code=code, signal=code - 128 if 128 < code < 160 else None)

    async def adopt(self, replica_id: str, process: Process) -> bool:
        task = await self._find(replica_id, process, fresh=True)
        if task is None or not _alive(task):
            return False
        status = task["Status"].get("ContainerStatus") or {}
        placed = Placed(task["ServiceName"], task["ID"], task["NodeID"], status.get("ContainerID"))
        self._placed[replica_id] = placed
        engine = await self._engine_of(placed.node)
        if engine is not None and placed.container:
            self._follow(replica_id, placed.container, engine=engine)
        return True

    async def stats(self, replica_id: str, process: Process) -> Stats:
        placed = self._placed.get(replica_id)
        if placed is None or placed.container is None:
            raise RuntimeFailure(f"replica {replica_id} has no running task", retryable=True)
        engine = await self._engine_of(placed.node)
        if engine is None:
            raise RuntimeFailure(f"replica {replica_id} runs on {await self._unreachable(placed)}", retryable=False)
        return await self._container_stats(replica_id, placed.container, process.pid, engine=engine)

    async def health(self, replica_id: str, process: Process) -> bool | None:
        placed = self._placed.get(replica_id)
        engine = await self._engine_of(placed.node) if placed is not None else None
        if placed is None or engine is None or placed.container is None:
            return None
        return await self._container_health(replica_id, placed.container, engine=engine)

    # -- stop ------------------------------------------------------------------------------------------------

    async def stop(self, replica_id: str, process: Process, grace_s: float) -> Exit | None:
        task = await self._find(replica_id, process, fresh=True)
        name = self.service_name(replica_id)
        if task is None or not _alive(task):
            ended = await self._ended(replica_id, task)
        else:
            node = (await self._node_map(fresh=True)).get(task["NodeID"])
            placed = self._placed.get(replica_id) or Placed(
                name, task["ID"], task["NodeID"], (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
            )
            engine = None if nodes.down(node) else await self._engine_of(placed.node)
            if nodes.down(node):
                log.warning("replica %s: its node is down; its service goes", replica_id)
                ended = Exit(code=-1)
            elif engine is not None and placed.container:
                try:
                    ended = await self._stop_container(replica_id, engine, placed.container, grace_s)
                except RuntimeFailure as exc:  # the node's Engine went away meanwhile: Swarm stops it
                    log.warning("replica %s: %s; Swarm stops it", replica_id, exc, extra={"replica": replica_id})
                    ended = await self._stop_by_swarm(replica_id, placed, grace_s)
            else:
                ended = await self._stop_by_swarm(replica_id, placed, grace_s)
        await self._remove(name)
        self._placed.pop(replica_id, None)
        self._tasks = None
        return ended

    async def _stop_container(self, replica_id: str, engine: Engine, container: str, grace_s: float) -> Exit:
        """The same ladder as the docker runtime's, through the Engine of the task's node."""
        attrs = await engine.call("a task's container", lambda c: c.api.inspect_container(container))

        async def send(action: str) -> None:
            with contextlib.suppress(RuntimeFailure):  # it may have ended meanwhile; the wait tells
                await engine.call(f"{action} to replica {replica_id}", lambda c: c.api.kill(container, action))

        async def ended() -> Exit | None:
            state = (await engine.call("a task's container", lambda c: c.api.inspect_container(container)))["State"]
            return None if state.get("Running") else exit_of(state)

        stop_signal = attrs.get("Config", {}).get("StopSignal") or "SIGTERM"
        rungs = ladder.ladder(stop_signal, grace_s, self.kill_wait_s)
        end = await ladder.climb(replica_id, rungs, send, ended, what=f"container {container[:12]}", interval=POLL_S)
        log.info("replica %s ended with %s", replica_id, describe(end), extra={"replica": replica_id})
        return end

    async def _stop_by_swarm(self, replica_id: str, placed: Placed, grace_s: float) -> Exit:
        """No Engine of its node: scale its service to 0 and let Swarm stop it, with the service's grace (the
        ladder of one rung, as long as the two of the other stops)."""

        def scale_to_zero(client: DockerClient) -> None:
            current = client.api.inspect_service(placed.service)
            client.api.update_service(
                current["ID"],
                current["Version"]["Index"],
                mode=ServiceMode("replicated", replicas=0),
                fetch_current_spec=True,
            )

        async def send(action: str) -> None:
            await self.engine.call(f"stop of replica {replica_id}", scale_to_zero)

        async def ended() -> Exit | None:
            task = await self._task(placed.task)
            if task is None:
                return Exit(code=-1)
            if task["Status"]["State"] in ALIVE:
                return None
            code = int((task["Status"].get("ContainerStatus") or {}).get("ExitCode", -1))
            return Exit(code=code, signal=code - 128 if 128 < code < 160 else None)

        rungs = (ladder.Rung("scale to 0 through Swarm", grace_s + self.kill_wait_s),)
        return await ladder.climb(replica_id, rungs, send, ended, what=f"service {placed.service}", interval=POLL_S * 5)

    async def _task(self, task_id: str) -> dict[str, Any] | None:
        def inspect(client: DockerClient) -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = client.api.inspect_task(task_id)
            except docker.errors.NotFound:
                return None
            return found

        return await self.engine.call("a swarm task", inspect)

    async def _remove(self, name: str) -> None:
        def remove(client: DockerClient) -> None:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_service(name)

        await self.engine.call(f"removal of swarm service {name}", remove)

    async def forget(self, replica_id: str) -> None:
        self._placed.pop(replica_id, None)
        await self._remove(self.service_name(replica_id))
        await self._drop_local(replica_id)

    async def reap_strays(self, known: set[str]) -> list[str]:
        """Services of this instance whose replica no record knows (portero died between creating and saving
        one), and port checks a dying portero left behind."""

        def reap(client: DockerClient) -> list[tuple[str, str]]:
            strays = []
            for found in client.api.services(filters={"label": f"{LABEL_INSTANCE}={self.instance}"}):
                replica = (found["Spec"].get("Labels") or {}).get(LABEL_REPLICA, "")
                if replica not in known:
                    client.api.remove_service(found["ID"])
                    strays.append((found["Spec"]["Name"], replica))
            for found in client.api.services(filters={"label": f"{LABEL_PORT_CHECK}={self.instance}"}):
                client.api.remove_service(found["ID"])
            return strays

        strays = await self.engine.call("removal of stray swarm services", reap)
        for _, replica in strays:
            if replica:
                await self._drop_local(replica)
        return [name for name, _ in strays]


def _held_blocks(client: DockerClient) -> set[int]:
    """The port blocks the services of every portero on the swarm hold."""
    taken = set()
    for found in client.api.services(filters={"label": LABEL_BLOCK}):
        with contextlib.suppress(KeyError, ValueError):
            taken.add(int(found["Spec"]["Labels"][LABEL_BLOCK]))
    return taken


def _ports_by_node(
    image: str, expected: dict[str, Any], ended: dict[str, dict[str, Any]], raw: bytes
) -> dict[str, set[int]]:
    """The listening ports each node's task of the port check printed, by hostname (its log lines carry the
    node's ID); a node whose task printed nothing is a final failure: the image has no `cat`."""
    lines: dict[str, list[str]] = defaultdict(list)
    for line in raw.decode("utf-8", "replace").splitlines():
        details, _, text = line.partition(" ")
        fields = dict(pair.split("=", 1) for pair in details.split(",") if "=" in pair)
        lines[fields.get("com.docker.swarm.node.id", "")].append(text)
    found = {}
    for node_id, node in expected.items():
        text = "\n".join(lines.get(node_id, []))
        if "local_address" not in text:
            error = ended[node_id]["Status"].get("Err") or ended[node_id]["Status"]["State"]
            raise RuntimeFailure(
                f"cannot check ports on node {nodes.hostname(node)}: `{' '.join(PORT_CHECK)}` in {image} "
                f"printed nothing ({error}); the swarm runtime needs `cat` in the image",
                retryable=False,
            )
        found[nodes.hostname(node)] = listening_ports(text)
    return found


def _ran(task: dict[str, Any]) -> bool:
    """Whether the task's container started and has exited since (between two polls of a start), as against a
    task that never ran (no image, no node, a refused mount)."""
    status = task["Status"]
    return status["State"] == "complete" or (
        status["State"] == "failed" and str(status.get("Err", "")).startswith("task: non-zero exit")
    )


def _alive(task: dict[str, Any]) -> bool:
    return task.get("DesiredState") == "running" and task.get("Status", {}).get("State") in ALIVE


def _image_known(client: DockerClient, image: str) -> None:
    """An image the nodes can run: on the manager's Engine, or in the registry it names. Final when neither."""
    try:
        client.api.inspect_image(image)
        return
    except docker.errors.ImageNotFound:
        pass
    if registry_of(image) is None:
        raise RuntimeFailure(
            f"image {image} is not on the manager's Engine and names no registry the nodes could pull it from",
            retryable=False,
        )
    registry_digest(client, image)
