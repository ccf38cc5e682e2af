"""What the docker and swarm runtimes share: the Engine client, error classification, image builds, container
stats as `docker stats` computes them, and the log follower.

Every Docker SDK call blocks, so each one runs in a thread (`asyncio.to_thread`); only the log followers, which
block for a container's whole life, get threads of their own, so that they never fill the default pool.
Engine errors are classified once, here (`engine_errors`): an unreachable daemon or a 5xx is retryable, a
missing image, a refused request or a failed build is final. The original error is chained with `from exc`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import logging.handlers
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions
from docker import DockerClient

from portero.runtimes.base import Progress, RuntimeFailure, Stats
from portero.spec.models import DockerSettings, ServiceSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

LABEL_SERVICE = "portero.service"
LABEL_REVISION = "portero.revision"
LABEL_REPLICA = "portero.replica"
LABEL_INSTANCE = "portero.instance"
# Images carry their own keys: a container inherits its image's labels, and a container someone else starts
# from a portero image must not look like one of portero's replicas.
LABEL_IMAGE_SERVICE = "portero.image.service"
LABEL_IMAGE_INSTANCE = "portero.image.instance"
FAILED_STEP_LINES = 30  # of the failing step's output, kept in the refusal and the event log


def instance_id(state_dir: Path) -> str:
    """This state directory's id, on every container and service it starts: another portero's are never touched."""
    path = state_dir / "instance"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        state_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(6)
        path.write_text(token + "\n")
        return token


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Classify what the Engine (or the way to it) said, once, at the edge."""
    try:
        yield
    except RuntimeFailure:
        raise
    except docker.errors.ImageNotFound as exc:
        raise RuntimeFailure(f"{what}: image not found ({_explain(exc)})", retryable=False) from exc
    except docker.errors.NotFound as exc:
        raise RuntimeFailure(f"{what}: not found ({_explain(exc)})", retryable=False) from exc
    except docker.errors.APIError as exc:
        retryable = exc.is_server_error() or exc.status_code == 409  # 409: a conflict of the moment
        raise RuntimeFailure(f"{what}: the Docker Engine refused: {_explain(exc)}", retryable=retryable) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise RuntimeFailure(f"{what}: the Docker Engine does not answer ({exc})", retryable=True) from exc
    except docker.errors.DockerException as exc:
        raise RuntimeFailure(f"{what}: {exc}", retryable=True) from exc


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def connect(settings: DockerSettings, timeout_s: float = 60) -> DockerClient:
    """A client of the spec's Engine (`docker.host`, `DOCKER_HOST`), on its API version or a negotiated one.

    An Engine over TCP is reached with the TLS material the Docker CLI would use (DOCKER_TLS_VERIFY,
    DOCKER_CERT_PATH: ca.pem, cert.pem, key.pem), the same for the manager and every node of a swarm."""
    version = settings.api_version or "auto"
    where = settings.host or os.environ.get("DOCKER_HOST") or "the default socket"
    with engine_errors(f"Docker Engine at {where}"):
        if settings.host:
            tcp = settings.host.startswith(("tcp://", "https://"))
            tls = docker.utils.kwargs_from_env().get("tls") if tcp else None
            return DockerClient(base_url=settings.host, version=version, timeout=int(timeout_s), tls=tls or False)
        return docker.from_env(version=version, timeout=int(timeout_s))


class Engine:
    """One lazily made client and a helper that runs a blocking SDK call in a thread, classified.

    The threads are the Engine's own, not asyncio's default pool (cores + 4: 6 on a 2-core machine), which the
    store and the monitor share: a call may block for seconds. A stats call waits for the Engine's next
    collection (measured: up to 1.0 s with `one-shot`, 2.0 s without), and an image build or pull for minutes,
    so six of them would otherwise hold every thread the store needs. (Waits for a state, a swarm task that
    runs or a container that ended, are `ladder.poll_until` over short calls, and hold no thread between them.)"""

    THREADS = 16

    def __init__(self, settings: DockerSettings, timeout_s: float = 60) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._client: DockerClient | None = None
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(self.THREADS, thread_name_prefix="engine")

    def client(self) -> DockerClient:
        with self._lock:
            if self._client is None:
                self._client = connect(self.settings, self.timeout_s)
            return self._client

    async def call(self, what: str, fn: Callable[[DockerClient], T]) -> T:
        def run() -> T:
            with engine_errors(what):
                return fn(self.client())

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)


# -- images --------------------------------------------------------------------------------------------------


def build_image(
    client: DockerClient,
    service: str,
    spec: ServiceSpec,
    base_dir: Path,
    settings: DockerSettings,
    instance: str,
    emit: Callable[[str], None],
) -> str:
    """Build the service's image and return a reference pinned to its content (`portero/SERVICE:ID12`).

    Blocking; `emit` gets every output line. A failed build raises a final RuntimeFailure that carries the failing
    step and the end of its output, so that the refusal says what to fix."""
    assert spec.build is not None
    context = _build_context(service, spec, base_dir)
    output = _BuildOutput(service, emit)
    stream = client.api.build(
        path=str(context),
        dockerfile=spec.build.dockerfile,
        buildargs=dict(spec.build.args),
        labels={LABEL_IMAGE_SERVICE: service, LABEL_IMAGE_INSTANCE: instance},
        network_mode="host" if settings.network == "host" else None,
        rm=True,
        forcerm=True,
        decode=True,
        timeout=int(settings.build_timeout_s),
    )
    for chunk in stream:
        output.feed(chunk)
    image_id = output.end()
    reference = f"portero/{service}:{image_id.split(':')[-1][:12]}"
    image = client.images.get(image_id)
    image.tag(reference)
    if spec.image:
        image.tag(spec.image)  # the name it is known by elsewhere
    return reference


def _build_context(service: str, spec: ServiceSpec, base_dir: Path) -> Path:
    assert spec.build is not None
    context = (base_dir / spec.build.context).resolve()
    if not context.is_dir():
        raise RuntimeFailure(f"services.{service}.build.context: no directory {context}", retryable=False)
    if not (context / spec.build.dockerfile).is_file():
        raise RuntimeFailure(
            f"services.{service}.build.dockerfile: no file {spec.build.dockerfile} in {context}", retryable=False
        )
    return context


class _BuildOutput:
    """A build's stream of chunks as lines, each emitted once whole; the step that runs and its output so far,
    which a failure quotes."""

    def __init__(self, service: str, emit: Callable[[str], None]) -> None:
        self.service = service
        self.emit = emit
        self.step = ""
        self.output: list[str] = []
        self.pending = ""  # the start of a line whose end has not come yet
        self.image_id: str | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self._fail(str(chunk["error"]))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            self.image_id = str(aux["ID"])
        *lines, self.pending = (self.pending + str(chunk.get("stream", ""))).split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))

    def end(self) -> str:
        if self.pending.strip():
            self.emit(self.pending)
        if self.image_id is None:
            raise RuntimeFailure(f"image build of {self.service} ended without an image", retryable=True)
        return self.image_id

    def _line(self, line: str) -> None:
        if line.startswith("Step "):
            self.step, self.output = line, []
        elif line.strip() and not line.startswith((" ---> ", "Removing intermediate container")):
            self.output.append(line)
        if line.strip():
            self.emit(line)

    def _fail(self, error: str) -> NoReturn:
        for line in error.splitlines():
            self.emit(line)
        tail = "\n".join(self.output[-FAILED_STEP_LINES:])
        message = f"image build of {self.service} failed at {self.step or 'the start'}: {error.strip()}"
        raise RuntimeFailure(message + (f"\n{tail}" if tail else ""), retryable=False)


# -- image references ------------------------------------------------------------------------------------


def split_reference(image: str) -> tuple[str, str | None, str | None]:
    """`[REGISTRY/]NAME[:TAG][@DIGEST]` as (repository, tag, digest); a registry's port is not a tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def registry_of(image: str) -> str | None:
    """The registry an image reference names (`registry.example:5000/portal` names one; `portal` and
    `library/portal` are Docker Hub's, which this returns as None): Docker's own rule, a first component with a
    dot, a colon or `localhost`."""
    repository = split_reference(image)[0]
    first, slash, _ = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def with_tag(image: str, tag: str) -> str:
    """The reference with `tag` when it names no tag of its own."""
    repository, own, _ = split_reference(image)
    return f"{repository}:{own or tag}"


def push_image(client: DockerClient, reference: str, emit: Callable[[str], None]) -> str:
    """Push a tagged image to its registry (credentials from portero's Docker config, as `docker push` reads
    them) and return the digest the registry gave it. Blocking; a refusal is final and says what to do."""
    repository, tag, _ = split_reference(reference)
    digest = None
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            error = str(chunk["error"]).strip()
            hint = ""
            if "auth" in error.lower() or "denied" in error.lower():
                hint = f" (log in first: `docker login {registry_of(reference)}` as portero's user, or DOCKER_CONFIG)"
            raise RuntimeFailure(f"push of {reference} failed: {error}{hint}", retryable=False)
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "Digest" in aux:
            digest = str(aux["Digest"])
    if digest is None:
        raise RuntimeFailure(f"push of {reference} ended without a digest from the registry", retryable=True)
    emit(f"pushed {reference} ({digest})")
    return digest


async def prepare_image(
    engine: Engine,
    service: str,
    spec: ServiceSpec,
    base_dir: Path,
    instance: str,
    progress: Progress | None,
    *,
    push: bool = False,
) -> ServiceSpec:
    """The `Runtime.prepare` of both container runtimes: build (pinning `image` to the result) or check `image`.

    With `push` (the swarm runtime) and an `image` that names a registry, the build is tagged with it and pushed,
    and the revision runs the pushed reference pinned by its digest (`REGISTRY/NAME:TAG@sha256:...`): every node
    pulls the same content."""
    if spec.build is None:
        return await _check_image(engine, service, spec, push=push)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def emit(line: str) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, line)

    def build() -> str:
        try:
            with engine_errors(f"image build of {service}"):
                reference = build_image(engine.client(), service, spec, base_dir, engine.settings, instance, emit)
            if push and spec.image and registry_of(spec.image):
                target = with_tag(spec.image, reference.rsplit(":", 1)[1])  # the content id when it names no tag
                with engine_errors(f"push of {target}"):
                    engine.client().images.get(reference).tag(*split_reference(target)[:2])
                    digest = push_image(engine.client(), target, emit)
                reference = f"{target}@{digest}"
            return reference
        finally:
            loop.call_soon_threadsafe(lines.put_nowait, None)

    started = time.monotonic()
    building = loop.run_in_executor(None, build)  # a future, not a task: the lines are read here meanwhile
    try:
        cached, steps = await _tell_build(service, lines, progress)
        reference = await building
    finally:
        if not building.done():
            building.cancel()
    took = time.monotonic() - started
    summary = f"built {service} as {reference} in {took:.1f} s ({cached} of {steps} steps from cache)"
    log.info("%s", summary, extra={"service": service})
    if progress is not None:
        await progress(summary)
    return spec.model_copy(update={"image": reference})


async def _check_image(engine: Engine, service: str, spec: ServiceSpec, *, push: bool) -> ServiceSpec:
    """An image to run as it is: present (pulled if not), and pinned to its registry's digest for a swarm."""
    if spec.image is None:
        raise RuntimeFailure(f"services.{service}: needs `image` or `build`", retryable=False)
    image = spec.image
    await engine.call(f"image {image} of {service}", lambda c: _present_or_pull(c, image))
    if push and registry_of(image) and split_reference(image)[2] is None:
        digest = await engine.call(f"digest of {image}", lambda c: registry_digest(c, image))
        return spec.model_copy(update={"image": f"{with_tag(image, 'latest')}@{digest}"})
    return spec


async def _tell_build(service: str, lines: asyncio.Queue[str | None], progress: Progress | None) -> tuple[int, int]:
    """Log a build's lines until it ends, and tell `progress` each step that does work; returns (cached, steps)."""
    steps = cached = 0
    step: str | None = None  # a step is told once its first output shows it ran (not "Using cache")
    while (line := await lines.get()) is not None:
        log.info("build %s: %s", service, line, extra={"service": service})
        if line.startswith("Step "):
            instruction = line.partition(" : ")[2].split(" ", 1)[0].upper()
            steps, step = steps + 1, None if instruction in ("FROM", "ARG") else line  # these do no work
        elif line.startswith("pushed ") and progress is not None:
            await progress(line)
        elif step is not None:
            if "Using cache" in line:
                cached += 1
            elif progress is not None:
                await progress(step)
            step = None
    return cached, steps


def registry_digest(client: DockerClient, image: str) -> str:
    """The digest the image's registry has for it now (what `docker service create` pins), asked through the
    Engine with portero's credentials."""
    try:
        found: dict[str, Any] = client.api.inspect_distribution(image)
    except docker.errors.APIError as exc:
        raise RuntimeFailure(f"image {image}: its registry does not show it: {_explain(exc)}", retryable=False) from exc
    return str(found["Descriptor"]["digest"])


def _present_or_pull(client: DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(image)
        except docker.errors.APIError as exc:
            raise RuntimeFailure(
                f"image {image} is not on the Docker Engine and could not be pulled: {_explain(exc)}",
                retryable=False,
            ) from exc


# -- stats -----------------------------------------------------------------------------------------------------


def cpu_percent(previous: dict[str, Any], current: dict[str, Any]) -> float:
    """`docker stats`' CPU %: the container's CPU time over the host's, times the online CPUs, in percent."""
    cpu, pre = current.get("cpu_stats", {}), previous.get("cpu_stats", {})
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    if system_delta <= 0 or cpu_delta < 0:
        return 0.0
    return float(cpu_delta) / float(system_delta) * float(online) * 100.0


def memory_used(sample: dict[str, Any]) -> int:
    """`docker stats`' MEM USAGE: usage less the inactive file cache (cgroup v1's total_, v2's plain key)."""
    memory = sample.get("memory_stats", {})
    usage = int(memory.get("usage", 0))
    detail = memory.get("stats", {})
    for key in ("total_inactive_file", "inactive_file"):
        if key in detail and detail[key] < usage:
            return usage - int(detail[key])
    return usage


def to_stats(previous: dict[str, Any], current: dict[str, Any], pid: int | None) -> Stats:
    used = memory_used(current)
    limit = int(current.get("memory_stats", {}).get("limit", 0)) or None
    networks = current.get("networks") or {}
    blkio = current.get("blkio_stats", {}).get("io_service_bytes_recursive") or []
    reads = sum(int(e.get("value", 0)) for e in blkio if str(e.get("op", "")).lower() == "read")
    writes = sum(int(e.get("value", 0)) for e in blkio if str(e.get("op", "")).lower() == "write")
    return Stats(
        cpu_percent=round(cpu_percent(previous, current), 2),
        memory_bytes=used,
        memory_percent=round(100 * used / limit, 2) if limit else 0.0,
        processes=int(current.get("pids_stats", {}).get("current", 0)),
        app_pid=pid,
        memory_limit_bytes=limit,
        net_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in networks.values()) if networks else None,
        net_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in networks.values()) if networks else None,
        block_read_bytes=reads,
        block_write_bytes=writes,
    )


class StatsSampler:
    """CPU % needs two samples. Each call is measured against the previous one (the interval between two
    monitor passes, as `docker stats` measures between two of its own); a first call, or one after a long pause,
    takes two samples 0.5 s apart. A call within 0.5 s of the last returns the last result: the window never
    shrinks to noise when the API and the monitor ask at once."""

    MIN_WINDOW_S = 0.5
    MAX_WINDOW_S = 30.0

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, dict[str, Any], Stats | None]] = {}
        self._lock = threading.Lock()

    def measure(self, client: DockerClient, key: str, container: str, pid: int | None) -> Stats:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
        if last is not None and now - last[0] < self.MIN_WINDOW_S and last[2] is not None:
            return last[2]
        if last is None or now - last[0] > self.MAX_WINDOW_S:
            first = _sample(client, container)
            time.sleep(self.MIN_WINDOW_S)
            last = (time.monotonic() - self.MIN_WINDOW_S, first, None)
        current = _sample(client, container)
        stats = to_stats(last[1], current, pid)
        with self._lock:
            self._last[key] = (time.monotonic(), current, stats)
        return stats

    def forget(self, key: str) -> None:
        with self._lock:
            self._last.pop(key, None)


def _sample(client: DockerClient, container: str) -> dict[str, Any]:
    sample: dict[str, Any] = client.api.stats(container, stream=False, one_shot=True)
    if not sample.get("memory_stats") and not sample.get("cpu_stats", {}).get("system_cpu_usage"):
        raise RuntimeFailure(f"container {container} is not running: no stats", retryable=False)
    return sample


# -- logs ------------------------------------------------------------------------------------------------------


class _Formatter(logging.Formatter):
    """The shim's line format, `<ISO time>Z <stream> <text>`, which portero.logs parses."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return f"{stamp.replace('+00:00', 'Z')} {record.name} {record.getMessage()}"


def parse_time(stamp: str) -> float:
    """An Engine timestamp (RFC 3339 with nanoseconds) as Unix time; microseconds are kept."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    return base + (float("0." + fraction[:6]) if fraction else 0.0)


def last_logged_at(path: Path) -> float | None:
    """Time of the last line in a replica log, so that a follower started again does not copy lines twice."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            tail = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        stamp = line.split(" ", 1)[0]
        with contextlib.suppress(ValueError):
            return parse_time(stamp)
    return None


class LogFollower:
    """Copies one container's stdout and stderr from the Engine's log API into the replica log.

    A thread per stream, each blocked on the Engine's `follow` stream for the container's life; when the
    container ends, a `portero` line says how (like the shim's). `stop()` closes the streams."""

    def __init__(
        self,
        engine: Engine,
        container: str,
        path: Path,
        max_bytes: int,
        describe_exit: Callable[[], str | None],
    ) -> None:
        self.engine = engine
        self.container = container
        self.describe_exit = describe_exit
        path.parent.mkdir(parents=True, exist_ok=True)
        self.since = last_logged_at(path)
        self.handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=3)
        self.handler.setFormatter(_Formatter())
        self._streams: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._stderr_read = threading.Event()  # its stream ended: all the container wrote there is in the log

    def start(self) -> None:
        for stream in ("stdout", "stderr"):
            thread = threading.Thread(
                target=self._follow, args=(stream,), name=f"logs:{self.container}:{stream}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _follow(self, stream: str) -> None:
        try:
            chunks = self.engine.client().api.logs(
                self.container,
                stdout=stream == "stdout",
                stderr=stream == "stderr",
                stream=True,
                follow=True,
                timestamps=True,
                since=self.since,
            )
            self._streams.append(chunks)
            pending = b""
            for chunk in chunks:
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    self._write(stream, raw.decode("utf-8", "replace"))
        except Exception as exc:  # an Engine gone away: the replica's poll reports it; the log says so once
            if not self._stopped.is_set():
                log.debug("log stream %s of %s ended: %s", stream, self.container, exc)
        if stream == "stderr":
            self._stderr_read.set()
        if stream == "stdout" and not self._stopped.is_set():
            self._stderr_read.wait(timeout=1.0)  # the end line after the last of stderr, where a crash says why
            with contextlib.suppress(Exception):
                ended = self.describe_exit()
                if ended:
                    self._emit("portero", time.time(), ended)

    def _write(self, stream: str, raw: str) -> None:
        stamp, _, text = raw.partition(" ")
        try:
            at = parse_time(stamp)
        except ValueError:
            at, text = time.time(), raw
        if self.since is not None and at < self.since:
            return
        self._emit(stream, at, text.rstrip("\r"))

    def _emit(self, stream: str, at: float, text: str) -> None:
        record = logging.LogRecord(stream, logging.INFO, __file__, 0, "%s", (text,), None)
        record.created = at
        self.handler.handle(record)

    def stop(self) -> None:
        self._stopped.set()
        for chunks in self._streams:
            with contextlib.suppress(Exception):
                chunks.close()
        for thread in self._threads:
            thread.join(timeout=1)
        self.handler.close()
