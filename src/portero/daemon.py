"""`portero up`: the control plane and its API in one process, with an ordered shutdown.

Shutdown order (uvicorn's and circus's ladder): stop taking management requests that change things, stop
every replica with its grace period, then close the API and the store. A lock file keeps a second portero
off the same state directory; the kernel releases it when portero dies, even by SIGKILL.
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
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any

import uvicorn

from portero.api import cluster as cluster_api
from portero.api.app import create_app
from portero.autoscale.loop import Autoscaler
from portero.cluster.team import Team
from portero.control import ControlPlane, Refused
from portero.dataplane import DataPlane
from portero.deploy.loop import Deployer
from portero.monitor.monitor import Monitor
from portero.router.server import Router, RouterError
from portero.runtimes.base import Runtime
from portero.runtimes.process import ProcessRuntime
from portero.spec.loader import load_spec
from portero.spec.models import Spec
from portero.store.base import StoreUnavailable
from portero.store.redis import RedisStore
from portero.store.sqlite import SqliteStore
from portero.tasks import settle, spawn
from portero.tokens import TOKENS_FILE, TokenError, TokenSet, ensure_admin, tighten_modes

log = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    """Another portero holds this state directory's lock."""


class StartupError(RuntimeError):
    """portero cannot start as the spec asks (a port taken, an image that does not build); nothing was started."""


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
    return ProcessRuntime(state_dir)


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
    if not is_loopback(spec.admin.host):
        log.warning(
            "ADMIN API EXPOSED: admin.host is %s, not loopback. The API speaks plain HTTP: bearer tokens cross that "
            "network readable. Bind 127.0.0.1 and put a TLS proxy in front of it (docs/security.md).",
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
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # portero owns SIGINT/SIGTERM: it must stop the replicas before the API goes


async def serve(
    spec_path: Path,
    state_dir: Path,
    on_started: Callable[[ControlPlane, Monitor], Coroutine[Any, Any, None]] | None = None,
) -> None:
    spec = load_spec(spec_path)
    with state_lock(state_dir):
        try:
            tokens = open_tokens(state_dir)
        except (TokenError, OSError) as exc:
            raise StartupError(f"tokens: {exc}") from exc
        sock = _bind(spec)
        store = make_store(spec, state_dir)
        control = ControlPlane(spec, spec_path.resolve().parent, store, make_runtime(spec, state_dir))
        if isinstance(control.runtime, ProcessRuntime):
            control.runtime.exit_hooks.append(control.supervisor.wake)  # a crashed replica is seen at once
        router = Router(spec.router) if spec.router.enabled else None
        deployer = control.deployer = Deployer(control, router)
        team = Team(spec, store, control, router, str(spec_path), tokens) if isinstance(store, RedisStore) else None
        if router is not None:
            dataplane = DataPlane(control, router)
            try:
                await dataplane.attach()
            except StoreUnavailable as exc:
                sock.close()
                await store.close()
                raise StartupError(f"{exc} (store.redis_url, REDIS_URL)") from exc
            deployer.on_traffic.append(dataplane.sync)
            try:
                await router.start()
            except RouterError as exc:
                sock.close()
                raise StartupError(str(exc)) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if team is None:
            await deployer.recover()
            try:
                await control.start(str(spec_path))
            except Refused as exc:  # an image did not build: nothing was started
                if router is not None:
                    await router.stop(grace_s=0)
                await store.close()
                sock.close()
                raise StartupError(str(exc)) from exc
        supervisor = spawn(control.supervisor.run(), name="supervisor", eternal=True)
        monitor = Monitor(control, router, state_dir, admin_url(spec))
        if team is not None:
            team.watch(monitor)
        await monitor.start()
        deploying = spawn(deployer.run(), name="deployer", eternal=True)
        autoscaler = Autoscaler(control, router, monitor)
        scaling = spawn(autoscaler.run(), name="autoscaler", eternal=True)
        app = create_app(control, stop.set, router, monitor, autoscaler, tokens=tokens)
        if team is not None:
            cluster_api.install(app, team.election)
            await team.start()
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
        server = _Server(config)
        api = spawn(server.serve(sockets=[sock]), name="admin-api", eternal=True)
        info = state_dir / "admin.json"
        info.write_text(json.dumps({"url": admin_url(spec), "pid": os.getpid()}))
        log.info("portero up: admin API on %s, state in %s", admin_url(spec), state_dir)
        # What startup made (modules, models, the app) lives as long as the daemon: frozen out of the collector's
        # reach, a full collection no longer walks it all. Those walks held every request up by tens of ms (the
        # router's p99 at 1,000 connections was 1.7x HAProxy's; docs/benchmarks.md).
        gc.freeze()
        ui = spawn(on_started(control, monitor), name="ui") if on_started else None
        try:
            await stop.wait()
        finally:
            log.info("portero stopping: replicas first, then the API")
            if ui is not None:
                ui.cancel()
            await monitor.stop()  # before the replicas go: their stopping is no alert
            for task in (supervisor, api, deploying, scaling):
                settle(task)
            deploying.cancel()
            scaling.cancel()
            if router is not None:
                await router.stop(grace_s=5.0)  # no new requests; those in flight finish first
            if team is None:
                await control.shutdown()
            else:
                await team.leave()  # the replicas stay for the next leader to adopt
            supervisor.cancel()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await api
            await store.close()
            info.unlink(missing_ok=True)
            sock.close()


def make_store(spec: Spec, state_dir: Path) -> SqliteStore | RedisStore:
    settings = spec.store
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.redis_prefix, settings.timeout_s)
    return SqliteStore(state_dir / "state.db")
