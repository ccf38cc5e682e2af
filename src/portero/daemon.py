"""`portero up`: the composition root of the control plane (its API, controllers, monitor and store), which
starts or adopts the router's processes and feeds them.

Start and stop are ordered lists of steps (`Daemon.STARTS`, `Daemon.STOPS`): the router first (adopted, it
keeps serving its last snapshot until the control plane knows its replicas), then the controllers, then the API.
Stopping (uvicorn's and circus's ladder): the monitor, the loops, the router (requests in flight finish), every
replica with its grace period, then the API and the store. `portero down --keep-running` leaves the replicas and
the router running for the next `portero up` to adopt. A lock file keeps a second portero off the same state
directory; the kernel releases it when portero dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import uvicorn

from portero import statedir
from portero.api import cluster as cluster_api
from portero.api import server as admin_server
from portero.api.app import create_app
from portero.autoscale.loop import Autoscaler
from portero.cluster.team import Team
from portero.control import ControlPlane
from portero.dataplane.build import BUILD
from portero.dataplane.link import RouterLink, RouterUnavailable
from portero.dataplane.plane import DataPlane
from portero.deploy.loop import Deployer
from portero.desired import DesiredState
from portero.errors import Refused
from portero.events import Event
from portero.monitor.monitor import Monitor
from portero.runtimes.base import Runtime
from portero.runtimes.process import ProcessRuntime
from portero.spec.loader import load_spec
from portero.spec.models import Spec
from portero.store.base import Store, StoreUnavailable
from portero.store.redis import RedisStore
from portero.store.sqlite import SqliteStore
from portero.supervisor.loop import Supervisor
from portero.tasks import settle, spawn
from portero.tls.admin import AdminCertificate
from portero.tls.manager import TlsManager
from portero.tls.vault import FileVault, RedisVault, Vault
from portero.tokens import TOKENS_FILE, TokenError, TokenSet, ensure_admin, tighten_modes

log = logging.getLogger(__name__)
# How long the steps of a stop take at most, besides the spec's own grace periods (`Daemon.stop_budget_s`).
MONITOR_STOP_S = 2.0  # Monitor.stop's grace
# RouterLink.stop: past the workers' grace, 15 s for the parent's last word, 5 s for its exit
ROUTER_STOP_EXTRA_S = 20.0
ADMIN_STOP_S = 5.0  # uvicorn's timeout_graceful_shutdown, below
STOP_SLACK_S = 5.0  # the store, the event records, a loaded machine


class AlreadyRunning(RuntimeError):
    """Another portero holds this state directory's lock."""


class StartupError(RuntimeError):
    """portero cannot start as the spec asks (a port taken, an image that does not build); nothing was started."""


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    try:
        for fixed in statedir.prepare(state_dir):  # owner-only, whatever it was before (docs/security.md)
            log.warning("state directory readable by other users: %s, now owner-only", fixed)
    except statedir.StateDirError as exc:
        raise StartupError(str(exc)) from None
    path = state_dir / "portero.lock"
    handle: IO[str] = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(f"portero is already running on {state_dir} (pid {pid}); use `portero apply`") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def make_runtime(spec: Spec, state_dir: Path) -> Runtime:
    if spec.runtime == "docker":
        from portero.runtimes.docker import DockerRuntime  # the Docker SDK loads only when it is used

        return DockerRuntime(state_dir, spec.docker)
    if spec.runtime == "swarm":
        from portero.runtimes.swarm import SwarmRuntime

        return SwarmRuntime(state_dir, spec.docker)
    return ProcessRuntime(state_dir, kill_wait_s=spec.process.kill_wait_s)


def admin_url(spec: Spec) -> str:
    return spec.admin.url


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_tokens(state_dir: Path) -> TokenSet:
    """The admin token at first start (`portero up` has shown it already), loose file modes fixed, then the set."""
    made = ensure_admin(state_dir)
    if made is not None:
        log.info("created admin token %s; its secret is in %s (mode 0600)", made[0].id, state_dir / "admin.token")
    for fixed in tighten_modes(state_dir):
        log.warning("token file readable by other users: %s, now 0600", fixed)
    tokens = TokenSet(state_dir / TOKENS_FILE)
    if tokens.error is not None:
        raise StartupError(tokens.error)
    return tokens


def _bind(spec: Spec) -> socket.socket:
    if not is_loopback(spec.admin.host) and spec.admin.tls is None:
        log.warning(
            "ADMIN API EXPOSED: admin.host is %s, not loopback. The API speaks plain HTTP: bearer tokens cross that "
            "network readable. Bind 127.0.0.1, or serve it over HTTPS (admin.tls, docs/tls.md).",
            spec.admin.host,
        )
    family = socket.AF_INET6 if ":" in spec.admin.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((spec.admin.host, spec.admin.port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {spec.admin.host}:{spec.admin.port} for the admin API: {exc.strerror} "
            "(set admin.port in the spec)"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # portero owns SIGINT/SIGTERM: it must stop the replicas before the API goes


@dataclass
class Daemon:
    """Everything `portero up` runs, built once (`build`) with its collaborators passed in; `start` and `stop` go
    through `STARTS` and `STOPS` in order, so the order is read in one place."""

    spec: Spec
    spec_path: Path
    state_dir: Path
    tokens: TokenSet
    admin: socket.socket
    store: SqliteStore | RedisStore
    control: ControlPlane
    link: RouterLink | None
    plane: DataPlane | None
    deployer: Deployer
    team: Team | None
    monitor: Monitor
    autoscaler: Autoscaler
    stop_requested: asyncio.Event
    keep_running: bool = False  # `portero down --keep-running`: replicas and router outlive this control plane
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    server: uvicorn.Server | None = None

    # -- start, in order ------------------------------------------------------------------------------------------

    async def open_router(self) -> None:
        """Adopt the router running for this state directory, or start one; it serves nothing new until the
        control plane knows its replicas (`release_router`), so an adopted router keeps serving its last snapshot."""
        if self.link is None or self.plane is None:
            return
        try:
            hello = await self.link.open()
        except RouterUnavailable as exc:
            raise StartupError(str(exc)) from exc
        try:
            servers = await self.store.get_servers()
        except StoreUnavailable as exc:
            raise StartupError(f"{exc} (store.redis_url, REDIS_URL)") from exc
        self.plane.hold()
        await self.plane.attach(servers)
        if self.plane.tls is not None:
            await self.plane.tls.load()  # the certificates held already go out with the first snapshot
        if self.link.adopted:
            workers = ", ".join(str(w["pid"]) for w in hello.workers) or "none"
            message = f"adopted the running router: pid {hello.pid}, workers {workers}, snapshot {hello.version}"
            await self.control.supervisor.record(Event("router.adopted", "router", message, at=self.control.clock()))

    async def start_control(self) -> None:
        if self.team is not None:
            return  # the election decides who runs the controllers (cluster/roles.py)
        await self.deployer.recover()
        try:
            await self.control.start(str(self.spec_path))
        except Refused as exc:  # an image did not build: nothing was started
            raise StartupError(str(exc)) from exc

    async def release_router(self) -> None:
        if self.team is not None:
            await self.team.start()
        if self.link is None or self.plane is None:
            return
        self.plane.release()
        if not await self.plane.settle():
            raise StartupError(self.link.error or "the router did not take the routing table in time")
        hello = self.link.hello
        if self.link.adopted and hello is not None and hello.build != BUILD:
            message = f"the router runs build {hello.build}, this portero {BUILD}: restarting it (hitless)"
            await self.control.supervisor.record(Event("router.upgrade", "router", message, at=self.control.clock()))
            spawn(self.link.restart(), name="router-upgrade")

    async def start_loops(self) -> None:
        self.tasks["supervisor"] = spawn(self.control.supervisor.run(), name="supervisor", eternal=True)
        if self.team is not None:
            self.team.watch(self.monitor)
        await self.monitor.start()
        self.tasks["deployer"] = spawn(self.deployer.run(), name="deployer", eternal=True)
        self.tasks["autoscaler"] = spawn(self.autoscaler.run(), name="autoscaler", eternal=True)
        if self.plane is not None and self.plane.tls is not None:
            self.plane.tls.start()

    async def start_api(self) -> None:
        app = create_app(self.control, self.request_stop, self.plane, self.monitor, self.autoscaler, tokens=self.tokens)
        if self.team is not None:
            cluster_api.install(app, self.team.election)
        admin_server.configure(self.spec.admin)
        config = uvicorn.Config(
            app,
            http=admin_server.GuardedProtocol,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(ADMIN_STOP_S),
            timeout_keep_alive=int(self.spec.admin.idle_timeout_s),
            backlog=2048,
        )
        trust: list[str] = []
        if self.spec.admin.tls is not None:
            try:
                certificate = AdminCertificate(
                    self.spec.admin.tls, self.state_dir, self.plane.tls if self.plane else None
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise StartupError(f"admin.tls: the API's certificate cannot be loaded: {exc}") from exc
            config.load()
            config.ssl = certificate.front  # its SNI hook hands each new connection the newest certificate
            trust = certificate.trust_files
        self.server = _Server(config)
        self.tasks["admin-api"] = spawn(self.server.serve(sockets=[self.admin]), name="admin-api", eternal=True)
        info = self.state_dir / "admin.json"
        name = self.spec.admin.tls.router_host if self.spec.admin.tls is not None else None
        info.write_text(json.dumps({"url": self.spec.admin.url, "pid": os.getpid(), "ca": trust, "server_name": name}))
        log.info("portero up: admin API on %s, state in %s", self.spec.admin.url, self.state_dir)

    STARTS = ("open_router", "start_control", "release_router", "start_loops", "start_api")

    def request_stop(self, *, keep_running: bool = False) -> float:
        """Stop (the signal handlers and `POST /shutdown` ask); returns how long the stop may take."""
        self.keep_running = keep_running
        self.stop_requested.set()
        return self.stop_budget_s()

    def stop_budget_s(self) -> float:
        """The longest the steps of `STOPS` may take, each to the end of its ladder: the monitor's grace, the
        router's workers finishing their requests, every replica (all at once) given its stop signal, its
        `stop_grace_s` and SIGKILL, then the API's own graceful shutdown. `portero down` waits this long, and no
        less: a fixed 60 s gave up on replicas with `stop_grace_s: 90` that went on to stop."""
        budget = MONITOR_STOP_S + ADMIN_STOP_S + STOP_SLACK_S
        if self.keep_running:
            return budget
        if self.link is not None:
            budget += self.spec.router.worker_stop_grace_s + ROUTER_STOP_EXTRA_S  # as `stop_router` gives it
        # Among other porteros only the last one stops the replicas (Team.leave); which one is last is known only
        # then, so each may take as long.
        graces = [s.stop_grace_s for s in self.control.spec.services.values() if s.managed]
        graces += [want.stop_grace_s for want in self.control.desired.groups.values()]
        return budget + max(graces, default=0.0) + self.control.runtime.kill_wait_s

    # -- stop, in order -------------------------------------------------------------------------------------------

    async def stop_monitor(self) -> None:
        await self.monitor.stop()  # before the replicas go: their stopping is no alert

    async def stop_loops(self) -> None:
        for task in self.tasks.values():
            settle(task)
        for name in ("deployer", "autoscaler"):
            if name in self.tasks:
                self.tasks[name].cancel()
        if self.plane is not None and self.plane.tls is not None:
            await self.plane.tls.stop()

    async def stop_router(self) -> None:
        if self.link is None:
            return
        if self.keep_running:
            await self.link.leave()  # the router serves on, the last snapshot, until the next portero adopts it
        else:
            await self.link.stop(self.spec.router.worker_stop_grace_s)  # no new requests; those in flight finish
            # No router left to drain a replica from: a drain would wait for workers that are gone (it held up
            # every `portero down` by 10 s, SETTLE_TIMEOUT_S, before the first SIGTERM).
            self.control.supervisor.drain = None

    async def stop_replicas(self) -> None:
        if self.keep_running:
            await self.control.supervisor.detach()
        elif self.team is None:
            await self.control.shutdown()
        else:
            await self.team.leave()  # the replicas stay for the next leader to adopt
        if "supervisor" in self.tasks:
            self.tasks["supervisor"].cancel()

    async def stop_api(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if "admin-api" in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await self.tasks["admin-api"]
        await self.store.close()
        (self.state_dir / "admin.json").unlink(missing_ok=True)
        self.admin.close()

    # Each stop step, and the start step whose work it undoes: after a failed start, only what started is stopped.
    STOPS = (
        ("stop_monitor", "start_loops"),
        ("stop_loops", "start_loops"),
        ("stop_router", "open_router"),
        ("stop_replicas", "start_control"),
        ("stop_api", ""),
    )

    async def stop(self, started: tuple[str, ...] = STARTS) -> None:
        log.info("portero stopping: %s", "leaving replicas and router running" if self.keep_running else "everything")
        for step, needs in self.STOPS:
            if needs and needs not in started:
                continue
            try:
                await getattr(self, step)()
            except Exception:
                log.exception("%s failed; stopping the rest", step)


def build(spec: Spec, spec_path: Path, state_dir: Path) -> Daemon:
    """Every component, with its collaborators passed in; nothing runs yet."""
    try:
        tokens = open_tokens(state_dir)
    except (TokenError, OSError) as exc:
        raise StartupError(f"tokens: {exc}") from exc
    admin = _bind(spec)
    store = make_store(spec, state_dir)
    link = RouterLink(state_dir) if spec.router.enabled else None
    control, plane = assemble(spec, spec_path.resolve().parent, store, make_runtime(spec, state_dir), link)
    if isinstance(control.runtime, ProcessRuntime):
        control.runtime.exit_hooks.append(control.supervisor.wake)  # a crashed replica is seen at once
    team = Team(spec, store, control, plane, str(spec_path), tokens=tokens) if isinstance(store, RedisStore) else None
    if plane is not None:
        plane.tls = make_tls(spec, state_dir, store, control, plane, team)
    monitor = Monitor(control, plane, state_dir, admin_url(spec))
    autoscaler = Autoscaler(control, plane, monitor)
    return Daemon(
        spec, spec_path, state_dir, tokens, admin, store, control, link, plane, control.deployer, team, monitor,
        autoscaler, asyncio.Event(),
    )  # fmt: skip


def assemble(
    spec: Spec, base_dir: Path, store: Store, runtime: Runtime, link: RouterLink | None
) -> tuple[ControlPlane, DataPlane | None]:
    """The controllers around the one owner of desired state, and the data plane that routes by it."""
    desired = DesiredState(store)
    supervisor = Supervisor(runtime, store, base_dir, lambda: desired.groups)
    desired.observers.append(supervisor.wake)
    plane = DataPlane(spec, desired, supervisor, link) if link is not None else None
    deployer = Deployer(desired, supervisor, store, plane)
    control = ControlPlane(spec, base_dir, store, runtime, supervisor=supervisor, desired=desired, deployer=deployer)
    if plane is not None:
        control.on_applied.append(plane.configure)
    return control, plane


async def serve(
    spec_path: Path,
    state_dir: Path,
    on_started: Callable[[ControlPlane, Monitor], Coroutine[Any, Any, None]] | None = None,
) -> None:
    spec = load_spec(spec_path)
    with state_lock(state_dir):
        daemon = build(spec, spec_path, state_dir)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, daemon.request_stop)
        started: list[str] = []
        try:
            for step in daemon.STARTS:
                started.append(step)  # a step that fails half-way has its stop run too
                await getattr(daemon, step)()
        except BaseException:
            await daemon.stop(tuple(started))
            raise
        # What startup made (modules, models, the app) lives as long as the daemon: frozen out of the collector's
        # reach, a full collection no longer walks it all (it held the router's requests up by tens of ms when the
        # router ran in this process; the API's still are).
        gc.freeze()
        ui = spawn(on_started(daemon.control, daemon.monitor), name="ui") if on_started else None
        try:
            await daemon.stop_requested.wait()
        finally:
            if ui is not None:
                ui.cancel()
            await daemon.stop()


def make_tls(
    spec: Spec,
    state_dir: Path,
    store: SqliteStore | RedisStore,
    control: ControlPlane,
    plane: DataPlane,
    team: Team | None,
) -> TlsManager:
    """The owner of the router's certificates; with Redis the leader obtains them and every portero serves them."""
    if team is None or not isinstance(store, RedisStore):
        vault: Vault = FileVault(state_dir)
        tls = TlsManager(spec.router, state_dir, vault, plane, control.supervisor.record, clock=control.clock)
    else:
        election = team.election

        async def members() -> list[str]:
            return list(await election.members())

        tls = TlsManager(
            spec.router,
            state_dir,
            RedisVault(store),
            plane,
            control.supervisor.record,
            clock=control.clock,
            leading=lambda: election.leading,
            identity=team.identity,
            members=members,
        )
    control.on_applied.append(lambda applied: tls.configure(applied.router))
    return tls


def make_store(spec: Spec, state_dir: Path) -> SqliteStore | RedisStore:
    settings = spec.store
    if settings.redis_url:
        return RedisStore(settings.redis_url, prefix=settings.redis_prefix, timeout_s=settings.timeout_s)
    return SqliteStore(state_dir / "state.db")
