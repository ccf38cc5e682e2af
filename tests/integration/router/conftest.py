"""Fixtures of the router's conformance tests: a real Router on a uvloop loop, recording backends, raw clients.

The router runs on its own uvloop loop in a thread, the backends on another, and the test itself in the main
thread with blocking sockets: a test can then write bytes one at a time, sleep between them, or hold a socket
open, without ever stalling the router it is testing. Rejected: running the router on pytest-asyncio's loop,
where every blocking socket call of the test would freeze the router too.

Every test ends with three checks: no backend received anything its strict parser refused; neither the router's
loop nor its tasks logged an error (a bug in a callback surfaces there, not in the test's own assertions); and,
once every client has left, the router counts no request as in flight (a leak there starves the retry budget).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portero.router.server import Router
from portero.router.service import Endpoint, ServiceRoute
from portero.router.snapshot import EndpointEntry, RoutingSnapshot, from_spec
from portero.spec.models import RouterSettings, ServiceSpec
from tests.integration.router.backend import HEALTH_PATH, LoopThread, RecordingBackend

HERE = Path(__file__).parent
ROOT = HERE.parents[2]

EndpointLike = RecordingBackend | str | tuple[RecordingBackend | str, int]


def address_of(endpoint: RecordingBackend | str) -> str:
    return endpoint.address if isinstance(endpoint, RecordingBackend) else endpoint


def service_spec(endpoints: list[EndpointLike], balance: dict[str, Any] | None = None) -> ServiceSpec:
    """A service of static endpoints; slow start off, so every weight counts from the first request."""
    entries = []
    for endpoint in endpoints:
        target, weight = endpoint if isinstance(endpoint, tuple) else (endpoint, 1)
        entries.append({"address": address_of(target), "weight": weight})
    spec: dict[str, Any] = {
        "endpoints": entries,
        "balance": {"slow_start_s": 0, **(balance or {})},
        "health": {"path": HEALTH_PATH},
    }
    if not entries:
        spec["command"] = ["true"]  # a service portero would run; none of its replicas is up
    return ServiceSpec.model_validate(spec)


def router_settings(**settings: Any) -> RouterSettings:
    """Test settings: a free port (port 0 is outside the spec's range, so it is set past validation)."""
    values: dict[str, Any] = {"health": {"interval_s": 60}, **settings}
    validated = RouterSettings.model_validate(values)
    update: dict[str, Any] = {"port": 0}
    if validated.tls is not None:
        update["tls"] = validated.tls.model_copy(update={"port": 0})
    return validated.model_copy(update=update)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class RouterUnderTest:
    def __init__(self, loop: LoopThread, router: Router, snapshot: RoutingSnapshot) -> None:
        self.loop = loop
        self.router = router
        self.snapshot = snapshot  # the last one it loaded: the tests change it as the control plane would
        self.port = loop.call(lambda: router.address[1])

    def load(self, service: str, change: Callable[[list[EndpointEntry]], list[EndpointEntry]]) -> None:
        """The next snapshot, with `service`'s endpoints changed by `change`, loaded on the router's thread."""
        services = tuple(
            dataclasses.replace(s, endpoints=tuple(change(list(s.endpoints)))) if s.name == service else s
            for s in self.snapshot.services
        )
        self.snapshot = dataclasses.replace(self.snapshot, version=self.snapshot.version + 1, services=services)
        self.call(self.router.load, self.snapshot)

    def drain(self, backend: RecordingBackend | str, drain_s: float = 0.0, service: str = "app") -> None:
        address = address_of(backend)
        self.load(
            service,
            lambda entries: [
                dataclasses.replace(e, draining=True, drain_s=drain_s) if e.address == address else e for e in entries
            ],
        )

    def register(self, backend: RecordingBackend | str, weight: int = 1, service: str = "app") -> None:
        self.load(service, lambda entries: [*entries, EndpointEntry(address_of(backend), weight, "registered")])

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the router's thread: the router is not thread-safe."""
        return self.loop.call(fn, *args)

    def service(self, name: str = "app") -> ServiceRoute:
        return self.router.services[name]

    def endpoint(self, backend: RecordingBackend | str, service: str = "app") -> Endpoint:
        return self.call(self.router.endpoint, service, address_of(backend))


class LoopErrors(logging.Handler):
    """Errors logged by the router (its tasks, its callbacks) while a test runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@pytest.fixture
def loop_errors() -> Iterator[LoopErrors]:
    handler = LoopErrors()
    loggers = [logging.getLogger("portero"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)
    assert not handler.records, "the router logged errors:\n" + "\n".join(handler.records)


@pytest.fixture
def backend_loop() -> Iterator[LoopThread]:
    loop = LoopThread("backends")
    yield loop
    loop.close()


@pytest.fixture
def backends(backend_loop: LoopThread) -> Iterator[Callable[..., RecordingBackend]]:
    made: list[RecordingBackend] = []

    def make(name: str = "backend") -> RecordingBackend:
        backend = RecordingBackend(name)
        backend_loop.run(backend.start())
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend_loop.run(backend.stop())
    errors = [f"{b.name}: {error}" for b in made for error in b.errors]
    assert not errors, "a backend received a malformed message:\n" + "\n".join(errors)


@pytest.fixture
def backend(backends: Callable[..., RecordingBackend]) -> RecordingBackend:
    return backends("backend")


@pytest.fixture
def start_router(loop_errors: LoopErrors) -> Iterator[Callable[..., RouterUnderTest]]:
    """`start_router({"app": [backend, (other, 3)]}, balance={...}, header_timeout_s=1, ...)`."""
    running: list[tuple[LoopThread, Router]] = []

    def start(
        services: dict[str, list[EndpointLike]], balance: dict[str, Any] | None = None, **settings: Any
    ) -> RouterUnderTest:
        loop = LoopThread("router")
        loop.loop.set_exception_handler(lambda _, context: loop_errors.records.append(repr(context)))
        config = router_settings(**settings)
        router = Router(config)
        running.append((loop, router))
        loop.run(router.start())
        specs = {name: service_spec(endpoints, balance) for name, endpoints in services.items()}
        snapshot = from_spec(config, specs, version=1)
        loop.call(router.load, snapshot)
        return RouterUnderTest(loop, router, snapshot)

    yield start
    try:
        for loop, router in running:  # every client is gone: nothing may be left counted as in flight
            settled(loop, router)
    finally:
        for loop, router in running:
            loop.run(router.stop(grace_s=0.5))
            loop.close()


def settled(loop: LoopThread, router: Router, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (counts := loop.call(lambda: in_flight(router))) != (0, 0):
        if time.monotonic() > deadline:
            pytest.fail(
                f"the router counts (active, at endpoints) = {counts} requests in flight after every client left"
            )
        time.sleep(0.02)


def in_flight(router: Router) -> tuple[int, int]:
    """(requests the router counts as active, requests its endpoints count as in flight)."""
    endpoints = sum(e.target.in_flight for s in router.services.values() for e in s.endpoints.values())
    return router.active, endpoints


@pytest.fixture
def proxy(start_router: Callable[..., RouterUnderTest], backend: RecordingBackend) -> RouterUnderTest:
    """The plain case: one service `app` with one backend, default limits."""
    return start_router({"app": [backend]})


# -- processes: a router alone (for its memory), backends that can be killed -----------------------------------------


class Process:
    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise AssertionError(f"{argv} did not print its port: {line!r}")
        self.port = int(line)
        self.pid = self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def ask(self, line: str) -> Any:
        """A line to the process's stdin, its JSON answer (run_router.py's `stats`)."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def processes() -> Iterator[Callable[[list[str]], Process]]:
    started: list[Process] = []

    def start(argv: list[str]) -> Process:
        process = Process(argv)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def router_process_argv(services: dict[str, list[str]], **settings: Any) -> list[str]:
    config = {"settings": settings, "services": services}
    return [sys.executable, str(HERE / "run_router.py"), json.dumps(config)]


def backend_process_argv(name: str, port: int = 0) -> list[str]:
    return [sys.executable, str(HERE / "backend.py"), name, str(port)]
