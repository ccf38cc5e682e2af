"""The swarm runtime: each service revision a Docker Swarm service, each replica one of its tasks.

Theory of operation. The supervisor manages replicas one by one; Swarm manages a count per service. The two
meet at the *slot*: a replicated Swarm service of N replicas has slots 1..N, each running one task at a time.

- `start` raises the revision's service (`portero-INSTANCE-SERVICE-rREV`, made on first use) by one replica and
  waits for the task of the new slot to run; the replica *is* that slot. A live task that no replica claims (one
  started by a portero that died before saving it) is claimed instead, so nothing runs twice.
- Tasks share the host's network; the task in slot N listens on `block + N`, where `block` is the service's own
  range of 100 ports from `docker.swarm.port_base`. The port comes from Swarm's template `{{.Task.Slot}}` and
  a one-line `sh` wrapper (`PORT=$((PORTERO_PORT_BLOCK + PORTERO_SLOT))`), so the image needs `/bin/sh`.
- Swarm's restart policy is `none`: the supervisor restarts, with its backoff and its event log. A task that
  ended leaves a dead slot, which Swarm never refills; `poll` reports the exit and gives the slot back (one
  replica fewer: Swarm removes non-running slots first).
- `stop` signals the task's container through the Engine (stop signal, grace, SIGKILL), so the task that ends
  is the replica's own, then gives its slot back the same way. For a task on another node, whose Engine portero
  does not reach, it lowers the count and Swarm picks the task: docs/runtimes.md says what that means.
- Rolling a new revision out is the deployer's job, the same on every runtime: with `max_surge: 1` and
  `max_unavailable: 0` the new service gains a task before the old one loses one, task by task (start-first).
  Swarm's own update settings (`docker.swarm.update_*`) govern the updates Swarm makes by itself to a revision's
  service, and are set on each.

A replica is identified by its slot (from its port) and its task's creation time (the `started_token`), so a
new task in the same slot is a stranger. Only services labelled with this state directory's id are touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
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
from portero.runtimes.accounts import container_user
from portero.runtimes.base import Exit, Launch, RuntimeFailure, Stats
from portero.runtimes.docker import EngineRuntime, describe, exit_of
from portero.runtimes.engine import LABEL_INSTANCE, LABEL_REVISION, LABEL_SERVICE, parse_time

log = logging.getLogger(__name__)
LABEL_BLOCK = "portero.port-block"
LABEL_GENERATION = "portero.generation"
BLOCK_SIZE = 100
POLL_S = 0.1
LISTING_TTL_S = 0.15
KILL_WAIT_S = 10.0
ALIVE = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}
PORT_WRAPPER = 'PORT=$((PORTERO_PORT_BLOCK + PORTERO_SLOT)); export PORT; exec "$@"'


@dataclass(frozen=True)
class Bound:
    """What a replica is on Swarm: a slot of a revision's service, run by one task."""

    service: str  # the Swarm service's name
    slot: int
    task: str
    container: str | None  # the task's container, when it runs on this node
    local: bool


class SwarmRuntime(EngineRuntime):
    name = "swarm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bound: dict[str, Bound] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._creating = asyncio.Lock()
        self._released: set[str] = set()  # dead tasks whose slot was given back already
        self._tasks: tuple[float, list[dict[str, Any]]] | None = None
        self._node_id: str | None = None
        self._starting: dict[str, int] = {}  # services with a start under way

    def service_name(self, service: str, revision: int) -> str:
        return f"portero-{self.instance}-{service}-r{revision}"

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- start -----------------------------------------------------------------------------------------------

    async def start(self, launch: Launch) -> Process:
        spec = launch.spec
        if spec is None or spec.image is None:
            raise RuntimeFailure(
                f"replica {launch.replica_id}: no image (services.{launch.service}.image or .build)", retryable=False
            )
        name = self.service_name(launch.service, launch.revision)
        self._starting[name] = self._starting.get(name, 0) + 1  # not idle, whatever its tasks say now
        try:
            async with self._creating:
                service = await self.engine.call(f"service {name}", lambda c: self._ensure_service(c, name, launch))
            block = int(service["Spec"]["Labels"][LABEL_BLOCK])
            async with self._lock(name):
                bound = await self.engine.call(
                    f"start of replica {launch.replica_id} on swarm service {name}",
                    lambda c: self._claim_or_add(c, name, launch.replica_id),
                )
                self._bound[launch.replica_id] = bound  # before the next start may look for unclaimed tasks
        finally:
            self._starting[name] -= 1
        self._tasks = None
        task = await self._task(bound.task)
        if task is None:
            raise RuntimeFailure(f"swarm task {bound.task[:12]} of {name} vanished as it started", retryable=True)
        host, node = await self.engine.call("node of a task", lambda c: self._node(c, task))
        status = task["Status"].get("ContainerStatus") or {}
        log.info(
            "replica %s is task %s in slot %d of %s on node %s",
            launch.replica_id,
            bound.task[:12],
            bound.slot,
            name,
            node,
            extra={"replica": launch.replica_id},
        )
        if bound.local and bound.container:
            self._follow(launch.replica_id, bound.container)
        token = parse_time(task["CreatedAt"])
        return Process(host=host, port=block + bound.slot, pid=int(status.get("PID") or 0), started_token=token)

    def _ensure_service(self, client: DockerClient, name: str, launch: Launch) -> dict[str, Any]:
        with contextlib.suppress(docker.errors.NotFound):
            found: dict[str, Any] = client.api.inspect_service(name)
            return found
        spec = launch.spec
        assert spec is not None
        assert spec.image is not None
        block = self._free_block(client)
        argv = list(launch.command) or _image_command(client, spec.image)
        env = {
            **launch.env,
            "PORTERO_SERVICE": launch.service,
            "PORTERO_REVISION": str(launch.revision),
            "PORTERO_PORT_BLOCK": str(block),
            "PORTERO_SLOT": "{{.Task.Slot}}",
        }
        labels = {
            LABEL_SERVICE: launch.service,
            LABEL_REVISION: str(launch.revision),
            LABEL_INSTANCE: self.instance,
            LABEL_BLOCK: str(block),
            LABEL_GENERATION: "0",
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
            command=["/bin/sh", "-c", PORT_WRAPPER, "portero-port"],
            args=argv,
            name=name,
            env=[f"{key}={value}" for key, value in env.items()],
            labels=labels,
            container_labels={k: v for k, v in labels.items() if k != LABEL_GENERATION},
            networks=[NetworkAttachmentConfig("host")],
            mode=ServiceMode("replicated", replicas=0),
            restart_policy=RestartPolicy(condition="none"),
            update_config=update,
            rollback_config=rollback,
            resources=Resources(cpu_limit=nano_cpus, mem_limit=memory),
            stop_grace_period=int(spec.stop_grace_s * 1e9),
            user=container_user(spec),
        )
        log.info("created swarm service %s (ports %d+slot)", name, block)
        created: dict[str, Any] = client.api.inspect_service(name)
        return created

    def _free_block(self, client: DockerClient) -> int:
        """The first range of 100 host ports that no portero service uses and nothing listens on now."""
        taken = set()
        for found in client.api.services(filters={"label": LABEL_BLOCK}):
            with contextlib.suppress(KeyError, ValueError):
                taken.add(int(found["Spec"]["Labels"][LABEL_BLOCK]))
        base = self.settings.swarm.port_base
        for block in range(base, 65_536 - BLOCK_SIZE, BLOCK_SIZE):
            if block not in taken and all(_free(port) for port in range(block + 1, block + BLOCK_SIZE)):
                return block
        raise RuntimeFailure(f"no free block of {BLOCK_SIZE} ports from docker.swarm.port_base {base}", retryable=True)

    def _claim_or_add(self, client: DockerClient, name: str, replica_id: str) -> Bound:
        tasks = client.api.tasks(filters={"service": name})
        claimed = {b.task for b in self._bound.values() if b.service == name}
        for task in tasks:
            if task["DesiredState"] == "running" and task["Status"]["State"] == "running" and task["ID"] not in claimed:
                log.info("replica %s claims task %s, which no replica had", replica_id, task["ID"][:12])
                return self._bound_of(client, name, task)
        tasks = self._settled(client, name, tasks)
        before = {task["ID"] for task in tasks}
        self._scale(client, name, +1)
        deadline = time.monotonic() + self.settings.swarm.task_timeout_s
        while True:
            for task in client.api.tasks(filters={"service": name}):
                if task["ID"] in before or task["DesiredState"] != "running":
                    continue
                state = task["Status"]["State"]
                if state == "running":
                    return self._bound_of(client, name, task)
                if state not in ALIVE:
                    self._release(client, name, task["ID"])
                    error = task["Status"].get("Err") or task["Status"].get("Message") or state
                    raise RuntimeFailure(f"swarm task of {name} {state}: {error}", retryable=True)
            if time.monotonic() >= deadline:
                self._scale(client, name, -1)
                raise RuntimeFailure(
                    f"no task of {name} running after {self.settings.swarm.task_timeout_s:g} s "
                    "(docker.swarm.task_timeout_s)",
                    retryable=True,
                )
            time.sleep(POLL_S)

    def _settled(self, client: DockerClient, name: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Wait out slots Swarm is still removing (a scale-down a moment ago): until they are gone they count
        towards the replicas, and one more replica would then start no task."""
        deadline = time.monotonic() + KILL_WAIT_S
        while any(t["DesiredState"] == "remove" for t in tasks) and time.monotonic() < deadline:
            time.sleep(POLL_S)
            tasks = client.api.tasks(filters={"service": name})
        return tasks

    def _bound_of(self, client: DockerClient, name: str, task: dict[str, Any]) -> Bound:
        container = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
        local = task.get("NodeID") == self._local_node(client)
        return Bound(name, int(task["Slot"]), task["ID"], container, local)

    def _scale(self, client: DockerClient, name: str, by: int) -> None:
        """Change the count of a revision's service; a new generation label makes Swarm reconcile even at par."""
        for attempt in range(5):
            current = client.api.inspect_service(name)
            replicas = int(current["Spec"]["Mode"]["Replicated"]["Replicas"])
            labels = dict(current["Spec"].get("Labels") or {})
            labels[LABEL_GENERATION] = str(int(labels.get(LABEL_GENERATION, "0")) + 1)
            try:
                client.api.update_service(
                    current["ID"],
                    current["Version"]["Index"],
                    mode=ServiceMode("replicated", replicas=max(0, replicas + by)),
                    labels=labels,
                    fetch_current_spec=True,
                )
                return
            except docker.errors.APIError as exc:
                if "update out of sequence" not in str(exc) or attempt == 4:
                    raise

    def _release(self, client: DockerClient, name: str, task_id: str) -> None:
        """Give back the slot of a task that ended: one replica fewer, and Swarm drops a non-running slot first.
        Called only once Swarm itself sees the task ended (or it might drop a running one), and under the
        service's lock: the poll of a pass and a stop may both see the same task end."""
        if task_id in self._released:
            return
        with contextlib.suppress(docker.errors.NotFound):  # the service went already: nothing to give back
            tasks = client.api.tasks(filters={"service": name})
            replicas = int(client.api.inspect_service(name)["Spec"]["Mode"]["Replicated"]["Replicas"])
            live = {t["Slot"] for t in tasks if _alive(t) and t["ID"] != task_id}
            if replicas > len(live):  # never below the tasks that run: a dead slot must be there to drop
                self._scale(client, name, -1)
        self._released.add(task_id)

    def _local_node(self, client: DockerClient) -> str:
        if self._node_id is None:
            self._node_id = str(client.info()["Swarm"]["NodeID"])
        return self._node_id

    def _node(self, client: DockerClient, task: dict[str, Any]) -> tuple[str, str]:
        """The address portero's router reaches a task at: loopback on this node, the node's address elsewhere."""
        node_id = task.get("NodeID", "")
        if node_id == self._local_node(client):
            return "127.0.0.1", "local"
        node = client.api.inspect_node(node_id)
        return str(node["Status"]["Addr"]), str(node["Description"]["Hostname"])

    # -- watch -----------------------------------------------------------------------------------------------

    async def _all_tasks(self, fresh: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        if not fresh and self._tasks is not None and now - self._tasks[0] < LISTING_TTL_S:
            return self._tasks[1]

        def listing(client: DockerClient) -> list[dict[str, Any]]:
            ours = {s["ID"] for s in client.api.services(filters={"label": f"{LABEL_INSTANCE}={self.instance}"})}
            return [task for task in client.api.tasks() if task.get("ServiceID") in ours]

        tasks = await self.engine.call("list of swarm tasks", listing)
        self._tasks = (now, tasks)
        return tasks

    async def _task(self, task_id: str) -> dict[str, Any] | None:
        """A task, or None once Swarm has dropped it (its slot was given back)."""

        def inspect(client: DockerClient) -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = client.api.inspect_task(task_id)
            except docker.errors.NotFound:
                return None
            return found

        return await self.engine.call("a swarm task", inspect)

    async def _find(self, replica_id: str, process: Process, fresh: bool = False) -> dict[str, Any] | None:
        """The replica's task: by its bound id, or (after a restart of portero) by slot and creation time."""
        tasks = await self._all_tasks(fresh)
        bound = self._bound.get(replica_id)
        for task in tasks:
            if bound is not None and task["ID"] == bound.task:
                return task
        if bound is None:
            for task in tasks:
                if task.get("CreatedAt") and parse_time(task["CreatedAt"]) == process.started_token:
                    return task
        return None

    async def poll(self, replica_id: str, process: Process) -> Exit | None:
        task = await self._find(replica_id, process)
        if task is not None and _alive(task):
            return None
        return await self._ended(replica_id, task)

    async def _ended(self, replica_id: str, task: dict[str, Any] | None) -> Exit:
        bound = self._bound.pop(replica_id, None)
        if task is None:
            return Exit(code=-1)  # gone from Swarm's history while no portero watched it
        status = task["Status"].get("ContainerStatus") or {}
        code = int(status.get("ExitCode", -1))
        name = bound.service if bound is not None else await self._service_name_of(task)
        if name is None:  # its service is gone already: no slot to give back
            return Exit(code=code, signal=code - 128 if 128 < code < 160 else None)
        async with self._lock(name):  # one release at a time per service: a slot is never given back twice
            await self.engine.call(f"release of {name}", lambda c: self._release(c, name, task["ID"]))
        return Exit(code=code, signal=code - 128 if 128 < code < 160 else None)

    async def _service_name_of(self, task: dict[str, Any]) -> str | None:
        def inspect(client: DockerClient) -> str | None:
            try:
                return str(client.api.inspect_service(task["ServiceID"])["Spec"]["Name"])
            except docker.errors.NotFound:
                return None

        return await self.engine.call("a swarm service", inspect)

    async def adopt(self, replica_id: str, process: Process) -> bool:
        task = await self._find(replica_id, process, fresh=True)
        if task is None or not _alive(task):
            return False
        name = await self._service_name_of(task)  # one of this instance's services: `_find` looks at no other
        if name is None:
            return False
        bound = await self.engine.call("a swarm task", lambda c: self._bound_of(c, name, task))
        self._bound[replica_id] = bound
        if bound.local and bound.container:
            self._follow(replica_id, bound.container)
        return True

    async def stats(self, replica_id: str, process: Process) -> Stats:
        bound = self._bound.get(replica_id)
        if bound is None or not bound.local or bound.container is None:
            raise RuntimeFailure(
                f"replica {replica_id} runs on another node; its stats need that node's Engine", retryable=False
            )
        return await self._container_stats(replica_id, bound.container, process.pid)

    async def health(self, replica_id: str, process: Process) -> bool | None:
        bound = self._bound.get(replica_id)
        if bound is None or not bound.local or bound.container is None:
            return None
        return await self._container_health(replica_id, bound.container)

    # -- stop ------------------------------------------------------------------------------------------------

    async def stop(self, replica_id: str, process: Process, grace_s: float) -> Exit | None:
        task = await self._find(replica_id, process, fresh=True)
        bound = self._bound.get(replica_id)
        if task is None or bound is None or not _alive(task):
            return await self._ended(replica_id, task)
        if bound.local and bound.container:
            ended = await self._stop_container(replica_id, bound.container, grace_s)
            deadline = time.monotonic() + KILL_WAIT_S
            while time.monotonic() < deadline:  # Swarm must see the task ended before its slot is given back
                task = await self._task(bound.task)
                if task is None or not _alive(task):
                    break
                await asyncio.sleep(POLL_S)
        else:
            ended = await self._scale_down_for(replica_id, bound, grace_s)
        async with self._lock(bound.service):
            await self.engine.call(f"release of {bound.service}", lambda c: self._release(c, bound.service, bound.task))
        self._bound.pop(replica_id, None)
        self._tasks = None
        return ended

    async def _stop_container(self, replica_id: str, container: str, grace_s: float) -> Exit:
        """The same ladder as the docker runtime's, on the task's own container: its task is the one that ends."""
        attrs = await self.engine.call("a task's container", lambda c: c.api.inspect_container(container))
        signal = attrs.get("Config", {}).get("StopSignal") or "SIGTERM"
        log.info("stopping replica %s: %s, %.1f s grace", replica_id, signal, grace_s, extra={"replica": replica_id})
        for rung, wait_s in ((signal, grace_s), ("SIGKILL", KILL_WAIT_S)):

            def kill(client: DockerClient, rung: str = rung) -> None:
                client.api.kill(container, rung)

            with contextlib.suppress(RuntimeFailure):
                await self.engine.call(f"stop of replica {replica_id}", kill)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                state = await self.engine.call("a task's container", lambda c: c.api.inspect_container(container))
                if not state["State"].get("Running"):
                    ended = exit_of(state["State"])
                    log.info("replica %s ended with %s", replica_id, describe(ended), extra={"replica": replica_id})
                    return ended
                await asyncio.sleep(POLL_S)
            if rung != "SIGKILL":
                log.warning("replica %s outlived its %.1f s grace: SIGKILL", replica_id, grace_s)
        raise RuntimeFailure(f"replica {replica_id} (container {container[:12]}) survived SIGKILL", retryable=True)

    async def _scale_down_for(self, replica_id: str, bound: Bound, grace_s: float) -> Exit:
        """A task on another node: lower the count and let Swarm choose (it stops with the service's grace)."""
        log.warning("replica %s runs on another node: scaling %s down, Swarm picks the task", replica_id, bound.service)
        async with self._lock(bound.service):
            await self.engine.call(f"scale-down of {bound.service}", lambda c: self._scale(c, bound.service, -1))
            self._released.add(bound.task)
        deadline = time.monotonic() + grace_s + KILL_WAIT_S
        while time.monotonic() < deadline:
            task = await self._task(bound.task)
            if task is None:
                return Exit(code=-1)
            if not _alive(task) and task["Status"]["State"] not in ALIVE:
                code = int((task["Status"].get("ContainerStatus") or {}).get("ExitCode", -1))
                return Exit(code=code, signal=code - 128 if 128 < code < 160 else None)
            await asyncio.sleep(POLL_S * 5)
        raise RuntimeFailure(f"Swarm stopped another task than replica {replica_id}'s", retryable=True)

    async def forget(self, replica_id: str) -> None:
        self._bound.pop(replica_id, None)
        await self._drop_local(replica_id)
        await self._remove_idle_services()

    async def _remove_idle_services(self) -> None:
        """A revision's service with no running task and no replica bound to it is gone for good."""
        busy = {b.service for b in self._bound.values()} | {name for name, n in self._starting.items() if n}

        def sweep(client: DockerClient) -> None:
            for found in client.api.services(filters={"label": f"{LABEL_INSTANCE}={self.instance}"}):
                name = found["Spec"]["Name"]
                if name in busy:
                    continue
                tasks = client.api.tasks(filters={"service": name, "desired-state": "running"})
                if not tasks:
                    client.api.remove_service(found["ID"])
                    log.info("removed swarm service %s: no task left", name)

        await self.engine.call("removal of idle swarm services", sweep)

    async def reap_strays(self, known: set[str]) -> list[str]:
        """Services of this instance of a revision no record knows. Replica ids are `SERVICE-REVISION-XXXX`
        (the supervisor's `_new_id`); tasks without a replica are claimed by the next start instead."""

        def reap(client: DockerClient) -> list[str]:
            strays = []
            for found in client.api.services(filters={"label": f"{LABEL_INSTANCE}={self.instance}"}):
                labels = found["Spec"].get("Labels") or {}
                prefix = f"{labels.get(LABEL_SERVICE)}-{labels.get(LABEL_REVISION)}-"
                if not any(replica.startswith(prefix) for replica in known):
                    client.api.remove_service(found["ID"])
                    strays.append(found["Spec"]["Name"])
            return strays

        return await self.engine.call("removal of stray swarm services", reap)


def _alive(task: dict[str, Any]) -> bool:
    return task.get("DesiredState") == "running" and task.get("Status", {}).get("State") in ALIVE


def _image_command(client: DockerClient, image: str) -> list[str]:
    config = client.api.inspect_image(image).get("Config") or {}
    argv = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    if not argv:
        raise RuntimeFailure(f"image {image} has no command; give the service a `command`", retryable=False)
    return argv


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
