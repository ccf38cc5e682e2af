"""The supervisor's thin async shell: gather observations, call `reconcile`, carry out its actions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from portero.events import Event
from portero.health.prober import Prober
from portero.health.verdict import next_probe_due
from portero.replicas import Replica, ReplicaState
from portero.runtimes.base import Exit, Launch, Runtime, RuntimeFailure
from portero.spec.models import ServiceSpec
from portero.store.base import StaleLeader, Store, StoreUnavailable
from portero.supervisor import decide
from portero.supervisor.decide import Desired, Forget, Observed, Start, Stop
from portero.tasks import spawn

log = logging.getLogger(__name__)
TICK_S = 0.2  # how often the supervisor looks even when nothing wakes it


class Supervisor:
    def __init__(
        self,
        runtime: Runtime,
        store: Store,
        base_dir: Path,
        wants: Callable[[], Mapping[str, Desired]],
        *,
        clock: Callable[[], float] = time.time,
        tick_s: float = TICK_S,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.base_dir = base_dir
        self.wants = wants  # the groups to keep, from their one owner (desired.py): read on every pass, never written
        self.clock = clock
        self.tick_s = tick_s
        self.replicas: list[Replica] = []
        self.templates: dict[tuple[str, int], ServiceSpec] = {}
        self.lock = asyncio.Lock()
        self.prober = Prober(runtime.health)  # an engine's own check (Docker HEALTHCHECK) wins over HTTP
        self._wake = asyncio.Event()
        self._stops: dict[str, asyncio.Task[None]] = {}
        self._saved: list[Replica] | None = None
        self._running = False
        self.acting = True  # False while another portero leads (docs/redis.md): the loop only waits
        self.host_env: Mapping[str, str] = os.environ  # where `env_from_host` takes its values
        # The data plane's hooks: told of every change of the replica set, asked to drain before a stop.
        self.observers: list[Callable[[list[Replica]], None]] = []
        self.drain: Callable[[Replica], Awaitable[None]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Take over the replicas a previous portero left running; dead ones are noticed by the first pass."""
        self.replicas = await self.store.load_replicas()
        self._saved = list(self.replicas)
        for stray in await self.runtime.reap_strays({r.id for r in self.replicas}):
            message = "stopped: running, but unknown to the store (portero died while starting it)"
            await self.record(Event("replica.stray", stray, message, at=self.clock()))
        for replica in self.replicas:
            if replica.process is None or not replica.running:
                continue
            if await self.runtime.adopt(replica.id, replica.process):
                message = f"adopted: still running as pid {replica.process.pid} on port {replica.process.port}"
                await self.record(Event("replica.adopted", replica.id, message, replica.service, self.clock()))
                if replica.state is ReplicaState.STOPPING:
                    self._stop(replica, self._grace(replica.service))
        for observer in self.observers:
            observer(self.replicas)

    async def run(self) -> None:
        self._running = True
        while self._running:
            try:
                if self.acting:
                    await self.tick()
            except (StoreUnavailable, StaleLeader) as exc:  # its next pass saves what this one could not
                log.warning("supervisor pass not saved: %s", exc)
            except Exception:
                log.exception("supervisor pass failed; the next pass starts over from what it observes")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    async def pause(self) -> None:
        """Stop acting on replicas; returns once the pass in progress, if any, has ended."""
        self.acting = False
        async with self.lock:  # held for a whole pass: taking it means none is running
            pass

    async def detach(self) -> None:
        """Stop supervising but leave every replica running: the next leader adopts them (several porteros)."""
        self._running = False
        self.wake()
        await self.pause()
        await self.prober.close()

    async def shutdown(self) -> None:
        """Stop every replica (each with its grace ladder, all at once) and forget them."""
        self._running = False
        self.wake()
        async with self.lock:
            for replica in self.replicas:
                if replica.running and replica.process is not None and replica.id not in self._stops:
                    self._stop(replica, self._grace(replica.service))
            stopping = set(self._stops)
            if self._stops:
                await asyncio.gather(*self._stops.values(), return_exceptions=True)
            survivors = []
            killed: dict[str, list[str]] = {}  # what each stop had to kill, for `portero down` to tell
            for replica in self.replicas:
                ended = await self.runtime.poll(replica.id, replica.process) if replica.process is not None else None
                if replica.process is not None and ended is None:
                    survivors.append(replica)  # its stop failed: keep the record, the next portero adopts it
                    continue
                if ended is not None and ended.killed and replica.id in stopping:
                    killed[replica.id] = list(ended.killed)
                await self.runtime.forget(replica.id)
            stopped = len(self.replicas) - len(survivors)
            message = f"stopped {stopped} replica(s)" + (f"; {len(survivors)} would not stop" if survivors else "")
            count = sum(len(found) for found in killed.values())
            if count:
                message += f"; had to kill {count} process(es): " + "; ".join(
                    f"{replica_id}: {', '.join(found)}" for replica_id, found in killed.items()
                )
            data = {"killed": killed} if killed else {}
            await self.record(Event("portero.stopped", "portero", message, at=self.clock(), data=data))
            self.replicas = survivors
            await self._persist()
        await self.prober.close()

    # -- one pass ----------------------------------------------------------------------------------------------

    async def tick(self) -> None:
        async with self.lock:
            now = self.clock()
            exits: dict[str, Exit] = {}
            for replica in self.replicas:
                if replica.running and replica.process is not None:
                    ended = await self.runtime.poll(replica.id, replica.process)
                    if ended is not None:
                        exits[replica.id] = ended
            observed = Observed(exits=exits, checks=self.prober.collect())
            plan = decide.reconcile(self.replicas, observed, self.wants(), now, self._new_id)
            self.replicas = plan.replicas
            for event in plan.events:
                await self.record(event)
            for action in plan.actions:
                try:
                    await self._perform(action, now)
                except Exception:  # one bad replica never stalls the others (mitmproxy's Servers.update)
                    log.exception("supervisor action %s failed; the next pass retries what is still needed", action)
            for replica in self.replicas:
                if replica.state is ReplicaState.STOPPING and replica.id not in self._stops:
                    self._stop(replica, self._grace(replica.service))  # a failed or lost stop is tried again
            self._probe(now)
            await self._persist()

    async def _perform(self, action: decide.Action, now: float) -> None:
        if isinstance(action, Start):
            await self._start(action.replica, now)
        elif isinstance(action, Stop):
            self._stop(action.replica, action.grace_s)
        elif isinstance(action, Forget):
            self.prober.forget(action.replica_id)
            await self.runtime.forget(action.replica_id)

    async def _start(self, replica: Replica, now: float) -> None:
        spec = self.templates.get((replica.service, replica.revision))
        if spec is None:  # its revision was pruned from the store: the current one replaces it
            self.replicas = [r for r in self.replicas if r.id != replica.id]
            message = f"revision {replica.revision} is no longer kept; replaced by the current revision"
            await self.record(Event("replica.removed", replica.id, message, replica.service, now))
            await self.runtime.forget(replica.id)
            return
        try:
            process = await self.runtime.start(self._launch(replica, spec))
        except RuntimeFailure as exc:
            updated, event = decide.start_failed(replica, str(exc), spec.restart, now, final=not exc.retryable)
            await self.record(event)
        else:
            updated = decide.started(replica, process, now)
            where = f" (node {process.node})" if process.node else ""
            message = f"started on {process.host}:{process.port}{where} as pid {process.pid}"
            await self.record(Event("replica.started", replica.id, message, replica.service, now))
        self._replace(updated)
        await self._persist()  # recorded at once: a portero killed now still knows this process

    def _launch(self, replica: Replica, spec: ServiceSpec) -> Launch:
        workdir = (self.base_dir / spec.workdir).resolve() if spec.workdir else self.base_dir
        env = {name: self.host_env[name] for name in spec.env_from_host if name in self.host_env}
        env.update(spec.env)
        if spec.version is not None:
            env.setdefault("APP_VERSION", spec.version)
        command = spec.command or ()  # a container runs its image's command unless the spec gives one
        return Launch(replica.id, replica.service, replica.revision, command, workdir, env, spec.port, spec)

    def _stop(self, replica: Replica, grace_s: float) -> None:
        if replica.id in self._stops or replica.process is None:
            return
        process = replica.process

        async def stop() -> None:
            try:
                if self.drain is not None:
                    await self.drain(replica)  # out of rotation, requests in flight done, before SIGTERM
                await self.runtime.stop(replica.id, process, grace_s)
            except RuntimeFailure as exc:
                log.error("could not stop replica %s: %s", replica.id, exc, extra={"replica": replica.id})
            finally:
                self._stops.pop(replica.id, None)
                self.wake()

        self._stops[replica.id] = spawn(stop(), name=f"stop:{replica.id}")

    def _probe(self, now: float) -> None:
        wants = self.wants()
        for replica in self.replicas:
            want = wants.get(replica.service)
            if want is None or replica.state not in decide.PROBED:
                continue
            if now >= next_probe_due(replica, want.health, self.prober.last_probe_at(replica.id)):
                self.prober.launch(replica, want.health, now)

    async def _persist(self) -> None:
        if self.replicas != self._saved:
            for observer in self.observers:
                observer(self.replicas)
            await self.store.save_replicas(self.replicas)
            self._saved = list(self.replicas)

    def _grace(self, service: str) -> float:
        want = self.wants().get(service)
        return want.stop_grace_s if want is not None else decide.DEFAULT_GRACE_S

    def _replace(self, replica: Replica) -> None:
        self.replicas = [replica if r.id == replica.id else r for r in self.replicas]

    def _new_id(self, service: str, revision: int) -> str:
        taken = {r.id for r in self.replicas}
        while (candidate := f"{service}-{revision}-{secrets.token_hex(2)}") in taken:
            pass
        return candidate

    async def record(self, event: Event) -> None:
        await self.store.append_event(event)
        log.info("%s %s: %s", event.kind, event.subject, event.message, extra={"subject": event.subject})

    # -- operator commands -------------------------------------------------------------------------------------

    def find(self, replica_id: str) -> Replica | None:
        return next((r for r in self.replicas if r.id == replica_id), None)

    async def hold(self, replica_id: str) -> Replica | None:
        async with self.lock:
            replica = self.find(replica_id)
            if replica is None:
                return None
            if replica.state is not ReplicaState.STOPPED:
                grace = self._grace(replica.service)
                replica, actions = decide.hold(replica, grace)
                self._replace(replica)
                for action in actions:
                    await self._perform(action, self.clock())
                now = self.clock()
                await self.record(Event("replica.held", replica.id, "stopped by the operator", replica.service, now))
                await self._persist()
            return replica

    async def release(self, replica_id: str) -> Replica | None:
        async with self.lock:
            replica = self.find(replica_id)
            if replica is None:
                return None
            if replica.state in (ReplicaState.STOPPED, ReplicaState.STOPPING):
                replica = decide.release(replica)
                self._replace(replica)
                now = self.clock()
                await self.record(
                    Event("replica.released", replica.id, "started by the operator", replica.service, now)
                )
                await self._persist()
        self.wake()
        return replica
