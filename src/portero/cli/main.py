"""`portero`: up, status, scale, logs, events, apply, validate, drain, undrain, down, token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
import uvloop
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape

from portero import logs as logfiles
from portero import statedir
from portero.cli.client import Client, CliError, resolve_token, resolve_trust, resolve_url
from portero.cli.monitor_views import alerts_table, series_view, snapshot_view
from portero.cli.tokens import token_app
from portero.cli.views import (
    decisions_table,
    deployments_table,
    endpoints_table,
    events_table,
    revisions_table,
    status_table,
)
from portero.events import Event
from portero.spec.loader import SpecError, load_spec
from portero.tokens import ADMIN_TOKEN_FILE, TOKENS_FILE, TokenError, ensure_admin
from portero.tokens import find as find_token
from portero.tokens import read as read_tokens

if TYPE_CHECKING:
    from portero.control import ControlPlane
    from portero.monitor.monitor import Monitor
    from portero.spec.models import Spec
    from portero.store.base import Store

app = typer.Typer(
    help="portero keeps a web application up, fast and deployable.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(token_app, name="token")
# Piped output (CI, `| less`) gets a wide fixed width so that tables are not squeezed into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
# Piped (logs, scripts, tests): one line per message, never wrapped mid-sentence.
errors = Console(stderr=True, soft_wrap=not sys.stderr.isatty())

SpecFile = Annotated[Path, typer.Option("--file", "-f", help="The spec file.", envvar="PORTERO_SPEC")]
# `logs -f` is --follow, as in kubectl and docker.
SpecFileLong = Annotated[Path, typer.Option("--file", help="The spec file.", envvar="PORTERO_SPEC")]
STATE_DIR = Path(os.environ.get("PORTERO_STATE_DIR", ".portero"))
TOKEN_GRACE_S = 3.0  # `up --detach` with Redis: how long a refused token may be one the group has not shared yet
STOP_WAIT_S = 90.0  # `up --detach` stopping the daemon it started: its replicas' stop ladders first


class Context:
    state_dir: Path = STATE_DIR
    admin: str | None = None

    @classmethod
    def client(cls, spec_file: Path = Path("portero.yaml")) -> Client:
        hint = f"the CLI sends PORTERO_TOKEN, else the token in {cls.state_dir / ADMIN_TOKEN_FILE}"
        url = resolve_url(cls.admin, cls.state_dir, spec_file)
        trust, name = resolve_trust(cls.state_dir, spec_file)
        return Client(url, token=resolve_token(cls.state_dir), token_hint=hint, verify=trust, server_name=name)


@app.callback()
def main(
    state_dir: Annotated[
        Path, typer.Option(help="Where portero keeps its state.", envvar="PORTERO_STATE_DIR")
    ] = STATE_DIR,
    admin: Annotated[str | None, typer.Option(help="URL of the admin API.", envvar="PORTERO_ADMIN")] = None,
) -> None:
    Context.state_dir = state_dir
    Context.admin = admin


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@app.command()
def up(
    *,
    file: SpecFile = Path("portero.yaml"),
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    ui: Annotated[bool, typer.Option(help="Live status table (foreground only).")] = True,
    wait_s: Annotated[float, typer.Option(help="With --detach: how long to wait for ready replicas.")] = 60,
) -> None:
    """Start portero on a spec: run its services' replicas and the admin API."""
    try:
        load_spec(file)
    except SpecError as exc:
        raise fail(str(exc)) from None
    if detach:
        _detach(file, wait_s)
        return
    from portero.daemon import AlreadyRunning, StartupError, serve

    live = ui and console.is_terminal
    _private_state_dir()
    _first_admin_token()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=str(Context.state_dir / "portero.log") if live else None,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check is noise
    try:
        uvloop.run(serve(file, Context.state_dir, _live_view if live else None))
    except (AlreadyRunning, StartupError, SpecError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _private_state_dir() -> None:
    """Made, or made owner-only again, before anything is written into it (statedir.py)."""
    try:
        fixed = statedir.prepare(Context.state_dir)
    except statedir.StateDirError as exc:
        raise fail(str(exc)) from None
    for line in fixed:
        errors.print(f"warning: readable by other users: {escape(line)}, now owner-only", highlight=False)


def _first_admin_token() -> None:
    """Made by the CLI rather than the daemon, and shown only on a terminal: a detached daemon's output goes to
    portero.log, and piped output to journald or a CI log, and a secret must never reach a log. The CLI reads
    it from the file afterwards."""
    try:
        made = ensure_admin(Context.state_dir)
    except (TokenError, OSError) as exc:
        raise fail(f"tokens: {exc}") from None
    if made is None:
        return
    record, secret = made
    path = Context.state_dir / ADMIN_TOKEN_FILE
    if not sys.stdout.isatty():
        console.print(f"Created the admin token {record.id} of this portero; it is in {path} (mode 0600).")
        return
    console.print(
        f"Created the admin token {record.id} of this portero. It is shown this once; the CLI reads it from "
        f"{path} (mode 0600).\n  {secret}",
        highlight=False,
        soft_wrap=True,
    )


async def _live_view(control: ControlPlane, monitor: Monitor) -> None:
    from portero.api.schemas import ServiceOut  # the server's modules load only when a server runs here

    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while True:
            now = control.clock()
            snapshot = monitor.snapshot if monitor.enabled else None  # CPU and memory, as `portero status` shows
            usage = {r.id: (r.cpu_percent, r.memory_bytes) for r in snapshot.replicas} if snapshot else {}
            services = [
                ServiceOut.of(view, now, usage, runtime=control.runtime.name).model_dump()
                for view in control.services()
            ]
            recent = await control.store.get_events(limit=8)
            live.update(Group(status_table(services), events_table([vars(e) for e in recent], "recent events")))
            await asyncio.sleep(1)


def _detach(file: Path, wait_s: float) -> None:
    state_dir = Context.state_dir
    _private_state_dir()
    client = Context.client(file)
    if client.alive():
        raise fail(f"portero is already running at {client.url}; use `portero apply` to change its spec")
    (state_dir / "admin.json").unlink(missing_ok=True)
    _first_admin_token()
    unknown = _foreign_token(file)
    if unknown is not None:
        raise fail(f"{unknown}: nothing was started")
    command = [sys.executable, "-m", "portero", "--state-dir", str(state_dir), "up", "--file", str(file), "--no-ui"]
    with (state_dir / "portero.log").open("ab") as out:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            umask=statedir.app_umask(),  # the daemon records it for the replicas: the one before this CLI's 077
        )
    _await_ready(file, child, wait_s)


def _await_ready(file: Path, child: subprocess.Popen[bytes], wait_s: float) -> None:
    """Until every service has its replicas ready (the status table), or waiting cannot help, or `wait_s`."""
    deadline = time.monotonic() + wait_s
    refused_until = time.monotonic() + TOKEN_GRACE_S
    starting = _StartingClient(file)
    client = starting.client
    hopeless = False
    while time.monotonic() < deadline and not hopeless:
        if child.poll() is not None:
            tail = (Context.state_dir / "portero.log").read_text(errors="replace").splitlines()[-5:]
            raise fail("portero exited at start:\n" + "\n".join(tail))
        client = starting.get()
        services = _services_at_start(client, child, refused_until) if client.alive() else None
        if services is not None and all(s["ready"] >= s["desired"] for s in services):
            console.print(status_table(services))
            _warn_root(services)
            console.print(f"portero running in the background (pid {child.pid}), admin API at {client.url}")
            return
        hopeless = services is not None and _cannot_start(services)  # waiting longer cannot help
        time.sleep(0.25)
    try:
        services = client.get("/services")["services"]
    except CliError:
        services = []
    why = "".join(f"\n  {line}" for line in _not_ready(services))
    if hopeless:
        raise fail(f"portero (pid {child.pid}) runs, but replicas cannot start; fix the spec and apply it:{why}")
    raise fail(f"portero (pid {child.pid}) started but its replicas were not all ready within {wait_s:g} s{why}")


def _services_at_start(
    client: Client, child: subprocess.Popen[bytes], refused_until: float
) -> list[dict[str, Any]] | None:
    """The services, or None while the token may still be on its way (with Redis, the group's tokens arrive
    within a second); a token refused after that stops the daemon again."""
    try:
        services: list[dict[str, Any]] = client.get("/services")["services"]
    except CliError as exc:
        if exc.status not in (401, 403):
            raise fail(f"portero (pid {child.pid}) started, but {exc}") from None
        if time.monotonic() < refused_until:
            return None
        _stop(child)
        refused = f"PORTERO_TOKEN was refused ({exc.args[0].splitlines()[0]}; {_token_hint()})"
        raise fail(f"{refused}: portero was stopped again") from None
    return services


def _not_ready(services: list[dict[str, Any]]) -> list[str]:
    """Why each replica that is not ready is not: its last error (a start failure, an exit, a failed check)."""
    return [
        f"{r['id']}: {r['state']}" + (f": {r['last_error']}" if r.get("last_error") else "")
        for s in services
        for r in s["replicas"]
        if r["state"] != "ready"
    ]


def _cannot_start(services: list[dict[str, Any]]) -> bool:
    """Some service lacks replicas, and every replica it is missing failed in a way that trying again cannot heal
    (command not found, workdir or image missing)."""
    for s in services:
        waiting = [r for r in s["replicas"] if r["state"] != "ready"]
        if s["ready"] < s["desired"] and waiting and all(r.get("last_error_final") for r in waiting):
            return True
    return False


class _StartingClient:
    """The client of a portero that is starting, made again once it wrote admin.json, which names what its HTTPS
    certificate is checked against (admin.tls)."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.client = Context.client(file)
        self.announced = False

    def get(self) -> Client:
        if not self.announced and (Context.state_dir / "admin.json").exists():
            self.announced = True
            self.client = Context.client(self.file)
        return self.client


def _foreign_token(file: Path) -> str | None:
    """Why the token the CLI would send cannot be this portero's, found before anything starts; None when it may
    be (no PORTERO_TOKEN, a token of this state directory, or Redis, where another portero's tokens count too)."""
    presented = os.environ.get("PORTERO_TOKEN")
    if not presented or load_spec(file).store.redis_url:
        return None
    try:
        records = read_tokens(Context.state_dir / TOKENS_FILE)
    except TokenError:
        return None
    if find_token(records, presented) is not None:
        return None
    return f"PORTERO_TOKEN is not a token of this portero (unknown or revoked; {_token_hint()})"


def _token_hint() -> str:
    return f"unset it to use {Context.state_dir / ADMIN_TOKEN_FILE}, or set it to a token of `portero token list`"


def _stop(child: subprocess.Popen[bytes]) -> None:
    """The daemon this command started, which nobody could drive: SIGTERM (it stops its replicas), then SIGKILL."""
    child.terminate()
    try:
        child.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@app.command()
def status(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Services and replicas: state, address, pid, uptime, restarts; the router's endpoints: requests, 5xx, faults
    by kind, ejections."""
    services = _call(lambda c: c.get("/services"), file)["services"]
    if as_json:
        console.print_json(json.dumps(services))
        return
    console.print(status_table(services))
    servers = _call(_servers, file)
    if servers:
        console.print(endpoints_table(servers))
    _warn_root(services)


def _servers(client: Any) -> list[dict[str, Any]]:
    try:
        servers: list[dict[str, Any]] = client.get("/load-balancer/servers")["servers"]
    except CliError as exc:
        if exc.status == 409:  # the router is disabled: no endpoints to show
            return []
        raise
    return servers


def _warn_root(services: list[dict[str, Any]]) -> None:
    as_root = [s["name"] for s in services if s.get("user") == "root"]
    if as_root:
        errors.print(
            f"warning: replicas of {escape(', '.join(as_root))} run as root, as portero does: they can read its "
            "state directory (the admin token). Set services.NAME.user (docs/security.md).",
            highlight=False,
        )


@app.command()
def scale(
    service: Annotated[str, typer.Argument(help="Service name.")],
    replicas: Annotated[int, typer.Argument(help="Replica count.", min=0, max=100)],
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Set a service's replica count (within its spec's min..max)."""
    result = _call(lambda c: c.post(f"/services/{service}/scale", {"replicas": replicas}), file)
    console.print(f"{service}: scaling to {result['desired']} replica(s) ({result['ready']} ready now)")


@app.command()
def logs(
    *,
    service: Annotated[str | None, typer.Argument(help="Service name (all when omitted).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    since: Annotated[str | None, typer.Option(help="30s, 5m, 2h, 1d, or an ISO time.")] = None,
    grep: Annotated[str | None, typer.Option(help="Only lines containing this text.")] = None,
    replica: Annotated[str | None, typer.Option(help="Only this replica.")] = None,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines of backlog.", min=1, max=10_000)] = 200,
    health: Annotated[bool, typer.Option("--health", help="Include the lines of portero's health checks.")] = False,
    file: SpecFileLong = Path("portero.yaml"),
) -> None:
    """Replica output, merged in time order (health checks' requests left out unless --health)."""
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise fail(str(exc)) from None
    params: dict[str, Any] = {"service": service, "replica": replica, "since": start, "grep": grep, "limit": tail}
    params["health"] = "true" if health else None
    client = Context.client(file)
    try:
        if follow:
            _end_on_interrupt()
            for line in client.stream("/logs", follow="true", **params):
                _print_line(line)
                sys.stdout.flush()  # `logs -f | grep` sees each line as it comes
        else:
            for line in client.get("/logs", **params)["lines"]:
                _print_line(line)
    except CliError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _end_on_interrupt() -> None:
    """Ctrl-C ends a follow at once, as `kubectl logs -f` does: nothing is left to finish. Left to unwind as
    KeyboardInterrupt through the HTTP client, it could land where closing the stream then waits (under load, a
    `logs -f` did not end after Ctrl-C)."""

    def end(signum: int, frame: object) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGINT, end)


def _print_line(line: dict[str, Any]) -> None:
    """Piped, a line goes out as the replica wrote it (`docker logs` does the same): no wrapping, no escaping, so
    `grep` and `jq` see the app's own text. On a terminal, control characters are shown escaped: an ANSI escape
    in a log must not repaint the operator's screen, and a "\\r" must not hide what came before it."""
    stamp = datetime.fromtimestamp(line["at"]).isoformat(timespec="milliseconds")
    if not console.is_terminal:
        sys.stdout.write(f"{stamp} {line['replica']} {line['text']}\n")
        return
    style = "red" if line["stream"] == "stderr" else "cyan"
    text = escape(logfiles.shown(line["text"]))
    console.print(f"[dim]{stamp}[/] [{style}]{escape(line['replica'])}[/] {text}", highlight=False, soft_wrap=True)


DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str | None) -> float | None:
    """`5m` -> -300 (seconds ago, as the API takes it); an ISO time -> its Unix time."""
    if text is None:
        return None
    match = DURATION.match(text.strip())
    if match:
        return -float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: expected 30s, 5m, 2h, 1d or an ISO time") from None


@app.command()
def metrics(
    *,
    name: Annotated[
        str | None, typer.Option("--name", help="A series, e.g. replica_cpu_percent or host_load1{...}.")
    ] = None,
    since: Annotated[str, typer.Option(help="With --name: 30s, 5m, 2h, 1d, or an ISO time.")] = "5m",
    step: Annotated[float | None, typer.Option(help="With --name: seconds between points.", min=0.1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """The latest sample of the host, replicas, services and portero; with --name, one series over time."""
    if name is None:
        found = _call(lambda c: c.get("/monitoring/metrics"), file)
        console.print_json(json.dumps(found)) if as_json else console.print(snapshot_view(found))
        return
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise fail(str(exc)) from None
    found = _call(lambda c: c.get("/monitoring/metrics", name=name, since=start, step=step), file)
    console.print_json(json.dumps(found)) if as_json else console.print(series_view(found))


@app.command()
def alerts(
    *,
    history: Annotated[bool, typer.Option(help="Alerts that fired and resolved (the event log).")] = False,
    limit: Annotated[int, typer.Option(help="With --history: how many events to read.", min=1, max=1000)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Active alerts (pending and firing); --history for those that fired and resolved."""
    if history:
        found = _call(lambda c: c.get("/events", limit=limit), file)["events"]
        shown = [e for e in found if e["kind"].startswith("alert.")]
        console.print_json(json.dumps(shown)) if as_json else console.print(events_table(shown, "alert history"))
        return
    active = _call(lambda c: c.get("/monitoring/alerts"), file)["alerts"]
    if as_json:
        console.print_json(json.dumps(active))
    elif not active:
        console.print("no active alert")
    else:
        console.print(alerts_table(active))


@app.command()
def events(
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    limit: Annotated[int, typer.Option(help="How many.", min=1, max=1000)] = 30,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """The event log: what happened, when, and why."""
    found = _call(lambda c: c.get("/events", service=service, limit=limit), file)["events"]
    console.print(events_table(found))


@app.command()
def apply(
    *,
    file: SpecFile = Path("portero.yaml"),
    detach: Annotated[bool, typer.Option("--detach", help="Return once applied; do not follow deployments.")] = False,
) -> None:
    """Send a changed spec to the running portero: each changed field is listed with how it took effect, and
    the deployments it starts are followed until they end (exit 1 when one fails or rolls back); a refused
    spec changes nothing."""
    try:
        spec = load_spec(file)
        text = file.read_text(encoding="utf-8")
    except SpecError as exc:
        raise fail(str(exc)) from None
    # The answer comes once each image is built (and pushed, on a swarm): as long as the builds may take.
    builds = sum(1 for service in spec.services.values() if service.build is not None)
    wait = httpx.Timeout(10, read=spec.docker.build_timeout_s * builds + 120 if builds else 10)
    body = {"yaml": text, "source": str(file)}
    result = _call(lambda c: c.request("PUT", "/spec", json=body, timeout=wait), file)
    console.print(escape("\n".join(result["changes"]) or "no change"), highlight=False)  # `rules[name]` is no markup
    ended = [
        _follow_deployment(_deployment(d, file), file, follow=not detach, quiet=True) for d in result["deployments"]
    ]
    failed = [d for d in ended if d["state"] not in ("running", "succeeded")]
    if failed:
        raise fail("; ".join(_outcome(d) for d in failed))


def _deployment(deployment_id: str, file: Path) -> dict[str, Any]:
    found: dict[str, Any] = _call(lambda c: c.get(f"/deployments/{deployment_id}"), file)
    return found


@app.command()
def validate(file: SpecFile = Path("portero.yaml")) -> None:
    """Check a spec without running anything."""
    try:
        spec = load_spec(file)
    except SpecError as exc:
        raise fail(str(exc)) from None
    console.print(f"{file}: valid ({len(spec.services)} service(s), runtime {spec.runtime})")


@app.command()
def deploy(
    *,
    service: Annotated[str, typer.Argument(help="Service to deploy.")] = "portal",
    version: Annotated[str | None, typer.Option(help="New version (APP_VERSION of the replicas).")] = None,
    image: Annotated[str | None, typer.Option(help="New image (container runtimes).")] = None,
    set_env: Annotated[list[str] | None, typer.Option("--set", help="KEY=VAL environment change; repeatable.")] = None,
    strategy: Annotated[str | None, typer.Option(help="rolling, blue-green or canary (default: the spec's).")] = None,
    abort: Annotated[
        bool, typer.Option("--abort", help="Abort the service's running deployment: its serving revision at once.")
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Return once started; do not follow it.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Deploy a new revision (the serving one with these changes) and follow it until it ends, as `kubectl rollout
    status` does: exit 1 when it fails or rolls back. --abort stops the running one."""
    if abort:
        _abort(service, file)
        return
    env = {}
    for item in set_env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--set {item!r}: expected KEY=VAL")
        env[key] = value
    body = {"service": service, "version": version, "image": image, "env": env, "strategy": strategy}
    started = _call(lambda c: c.post("/deploy", {k: v for k, v in body.items() if v is not None}), file)
    ended = _follow_deployment(started, file, follow=not detach)
    if ended["state"] not in ("running", "succeeded"):
        raise fail(_outcome(ended))


def _abort(service: str, file: Path) -> None:
    found = _call(lambda c: c.get("/deployments", service=service, limit=20), file)["deployments"]
    running = next((d for d in found if d["state"] == "running"), None)
    if running is None:
        raise fail(f"no deployment of {service} is running")
    ended = _call(lambda c: c.post(f"/deployments/{running['id']}/abort"), file)
    console.print(
        f"deployment {escape(ended['id'])} aborted: revision {ended['from_revision']} serves {escape(service)}"
    )


@app.command()
def rollback(
    *,
    service: Annotated[str, typer.Argument(help="Service to roll back.")] = "portal",
    revision: Annotated[int | None, typer.Argument(help="Kept revision (default: the previous one).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Return once started; do not follow it.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Go back to a kept revision; recorded as a deployment, followed until it ends."""
    started = _call(lambda c: c.post("/rollback", {"service": service, "revision": revision}), file)
    ended = _follow_deployment(started, file, follow=not detach)
    if ended["state"] not in ("running", "succeeded"):
        raise fail(_outcome(ended))


@app.command()
def history(
    service: Annotated[str, typer.Argument(help="Service.")] = "portal",
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Revisions of a service and its deployments."""
    revisions = _call(lambda c: c.get(f"/services/{service}/revisions"), file)["revisions"]
    found = _call(lambda c: c.get("/deployments", service=service, limit=20), file)["deployments"]
    console.print(revisions_table(revisions))
    console.print(deployments_table(found))


def _follow_deployment(started: dict[str, Any], file: Path, *, follow: bool, quiet: bool = False) -> dict[str, Any]:
    """Print its steps as they come until it ends (`follow`), and return its last record."""
    if not quiet:
        console.print(
            f"deployment {escape(started['id'])}: revision {started['from_revision']} -> "
            f"{started['to_revision']} ({started['strategy']})"
        )
    shown = 0
    current = started
    while True:
        for step in current["steps"][shown:]:
            stamp = datetime.fromtimestamp(step["at"]).strftime("%H:%M:%S")
            console.print(f"  [dim]{stamp}[/] {escape(step['message'])}", highlight=False)
        shown = len(current["steps"])
        if current["state"] != "running" or not follow:
            return current
        time.sleep(0.5)
        current = _deployment(started["id"], file)


def _outcome(d: dict[str, Any]) -> str:
    return f"deployment {d['id']} {d['state'].replace('_', ' ')}: {d['reason']}"


@app.command()
def autoscaler(file: SpecFile = Path("portero.yaml")) -> None:
    """The autoscaler's policy, current signals and last decisions, per service."""
    found = _call(lambda c: c.get("/autoscaler"), file)
    console.print(f"autoscaler: {'on' if found['enabled'] else 'off (autoscale.enabled / AUTO_SCALE_ENABLED)'}")
    for service in found["services"]:
        policy = service["policy"]
        targets = ", ".join(
            f"{key} {policy[key]}"
            for key in ("cpu_percent", "in_flight", "requests_per_second", "p95_s")
            if policy[key]
        )
        console.print(
            f"[bold]{escape(service['service'])}[/]: {service['desired']} replica(s) within "
            f"{service['min']}..{service['max']}; {policy['mode']} ({escape(targets)}); signals "
            f"{escape(str(service['signals']))}; cold starts {service['cold_starts_s']}",
            highlight=False,
        )
        console.print(decisions_table(service["decisions"]))


@app.command()
def down(
    *,
    file: SpecFile = Path("portero.yaml"),
    timeout_s: Annotated[
        float | None,
        typer.Option(help="How long to wait for portero to stop [default: its longest stop ladder, as it says]."),
    ] = None,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Stop portero only: the replicas and the router keep serving, and the next `portero up` adopts "
            "them (an upgrade of portero without downtime).",
        ),
    ] = False,
) -> None:
    """Stop every replica gracefully, and the router, then portero itself (among other porteros on one Redis, the
    replicas stay for the next leader)."""
    client = Context.client(file)
    replicas = _call(lambda c: c.get("/containers/list"), file)["containers"]
    among_others = bool((_call(lambda c: c.get("/health"), file) or {}).get("cluster"))  # null when alone
    asked_at = time.time()
    path = "/shutdown?keep_running=true" if keep_running else "/shutdown"
    accepted = _call(lambda c: c.post(path), file)
    said = accepted.get("stop_within_s")
    wait_s = timeout_s if timeout_s is not None else (said or OLD_STOP_WAIT_S) + DOWN_SLACK_S
    stops_replicas = not keep_running and not among_others  # else the replicas stay, for the next portero
    if stops_replicas:
        console.print(f"stopping portero: up to {wait_s:.0f} s (the router's workers, then each replica's grace)")
    left = _wait_stopped(client, wait_s, show=stops_replicas)
    if left is not None:
        which = f"; still stopping: {', '.join(left)}" if left else ""
        raise fail(f"portero did not stop within {wait_s:g} s{which} (`portero down --timeout-s` to wait longer)")
    if keep_running:
        console.print("portero stopped; its replicas and router keep serving until the next `portero up`")
        return
    stopped = _last_stop(file, asked_at - 1)
    report = f": {escape(stopped.message)}" if stopped else ""
    console.print(f"portero stopped{report}; {_left_running(replicas, among_others=among_others)}")


OLD_STOP_WAIT_S = 60.0  # a portero that does not say how long its stop takes (before `stop_within_s`)
DOWN_SLACK_S = 10.0  # the CLI's own polling and a loaded machine, past what portero says
PROGRESS_EVERY_S = 15.0  # `down` says what still stops at least this often


def _wait_stopped(client: Client, wait_s: float, *, show: bool) -> list[str] | None:
    """Wait until portero's API is gone and its admin.json removed, saying which replicas still stop as their
    number changes (and every PROGRESS_EVERY_S); None once stopped, else the replicas last seen stopping."""
    started = time.monotonic()
    stopping: list[str] = []
    told: tuple[list[str], float] | None = None
    while time.monotonic() - started < wait_s:
        alive = client.alive()
        if not alive and not (Context.state_dir / "admin.json").exists():
            return None
        if alive and show:
            stopping = _still_stopping(client)
            elapsed = time.monotonic() - started
            if told is None or stopping != told[0] or elapsed - told[1] >= PROGRESS_EVERY_S:
                told = (stopping, elapsed)
                now = f"{len(stopping)} replica(s) stopping: {', '.join(stopping)}" if stopping else "replicas stopped"
                console.print(f"  {elapsed:.0f} s: {now}", highlight=False)
        time.sleep(0.5)
    return stopping


def _still_stopping(client: Client) -> list[str]:
    try:
        found = client.get("/containers/list")["containers"]
    except CliError:  # going away between two requests
        return []
    return sorted(r["id"] for r in found if r["state"] != "stopped")


def _last_stop(file: Path, since: float) -> Event | None:
    """What the stop did (how many replicas, what had to be killed), from the event portero wrote last: its API
    is gone by now, its store is not."""
    from portero.daemon import make_store
    from portero.store.sqlite import SqliteStore

    try:
        spec: Spec | None = load_spec(file)
    except SpecError:
        spec = None
    if spec is not None and spec.store.redis_url is not None:
        store: Store = make_store(spec, Context.state_dir)
    elif (Context.state_dir / "state.db").exists():
        store = SqliteStore(Context.state_dir / "state.db")
    else:
        return None

    async def read() -> list[Event]:
        try:
            return await store.get_events(since=since, limit=1000)
        finally:
            await store.close()

    try:
        found = asyncio.run(read())
    except Exception:  # a report that cannot be read is no reason to fail a stop that worked
        return None
    return next((e for e in reversed(found) if e.kind == "portero.stopped"), None)


Endpoint = Annotated[str, typer.Argument(help="The endpoint's address (host:port), or the id of a replica.")]


@app.command()
def drain(
    *,
    service: Annotated[str, typer.Argument(help="Service name.")],
    endpoint: Endpoint,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Drain it even if it is the last endpoint that takes requests: the service stops."
        ),
    ] = False,
    timeout_s: Annotated[
        float | None, typer.Option(help="How long requests in flight may finish (router.drain_timeout_s).")
    ] = None,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Take an endpoint out of rotation (HAProxy's `state drain`): no new requests, those in flight finish."""
    address = _endpoint_address(service, endpoint, file)
    body: dict[str, Any] = {"service": service, "address": address, "force": force}
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    try:
        found = Context.client(file).post("/load-balancer/drain", body)
    except CliError as exc:
        last = exc.status == 409 and not force and "last endpoint" in str(exc)
        raise fail(str(exc).replace("repeat with force", "`portero drain --force`") if last else str(exc)) from None
    console.print(f"{service} {address}{_replica_of(found)}: draining; `portero undrain` puts it back", highlight=False)


@app.command()
def undrain(
    service: Annotated[str, typer.Argument(help="Service name.")],
    endpoint: Endpoint,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """Put a draining endpoint back in rotation."""
    address = _endpoint_address(service, endpoint, file)
    found = _call(lambda c: c.post("/load-balancer/undrain", {"service": service, "address": address}), file)
    console.print(f"{service} {address}{_replica_of(found)}: back in rotation", highlight=False)


def _endpoint_address(service: str, endpoint: str, file: Path) -> str:
    if ":" in endpoint:
        return endpoint
    servers = _call(lambda c: c.get("/load-balancer/servers", service=service), file)["servers"]
    address = next((s["address"] for s in servers if s["replica"] == endpoint), None)
    if address is None:
        raise fail(f"{service} has no endpoint of replica {endpoint} (`portero status` lists the replicas)")
    return str(address)


def _replica_of(server: dict[str, Any]) -> str:
    return f" (replica {server['replica']})" if server.get("replica") else ""


router_app = typer.Typer(help="The router's processes: status, restart, tls.", no_args_is_help=True)
app.add_typer(router_app, name="router")


@router_app.command("status")
def router_status(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """The router's parent and workers, the snapshot each serves, its listeners."""
    _show_router(_call(lambda c: c.get("/router"), file), as_json=as_json)


@router_app.command("restart")
def router_restart(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """New router workers (and the installed portero's router code) without refusing a connection."""
    _show_router(_call(lambda c: c.post("/router/restart"), file), as_json=as_json)


@router_app.command("tls")
def router_tls(
    *,
    renew: Annotated[
        str | None, typer.Option("--renew", metavar="HOST", help="Obtain a new certificate for HOST now (ACME).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    file: SpecFile = Path("portero.yaml"),
) -> None:
    """The router's certificates: where each comes from, until when it is valid, when it is renewed, what failed."""
    if renew is not None:
        info = _call(lambda c: c.post(f"/router/tls/{renew}/renew"), file)
    else:
        info = _call(lambda c: c.get("/router/tls"), file)
    if as_json:
        console.print_json(json.dumps(info))
        return
    console.print(_certificates_text(info), highlight=False)


def _certificates_text(info: dict[str, Any]) -> str:
    if not info["enabled"]:
        return "no HTTPS: router.tls is not set in the spec"
    lines = [f"ACME directory {info['directory_url']}" if info["directory_url"] else "certificates given as files"]
    now = time.time()
    for cert in info["certificates"]:
        if cert["not_after"] is None:
            validity = "no certificate yet"
        else:
            until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(cert["not_after"]))
            validity = f"valid until {until} ({(cert['not_after'] - now) / 86_400:.1f} days)"
        line = f"  {cert['host']:<28} {cert['source']:<5} {cert['state']:<9} {validity}"
        if cert["renew_at"] is not None:
            line += f", renewed from {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(cert['renew_at']))}"
        lines.append(line)
        if cert["error"]:
            lines.append(f"      {cert['failures']} failure(s): {escape(cert['error'])}")
    counts = info["handshakes"]
    if counts:
        lines.append("  handshakes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


def _show_router(info: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(info))
        return
    workers = ", ".join(f"{w['pid']} (snapshot {w['version']})" for w in info["workers"]) or "none"
    console.print(
        f"router pid {info['pid']}, build {info['build']}{' (adopted)' if info['adopted'] else ''}\n"
        f"  listening on {', '.join(info['listeners'])}\n"
        f"  workers: {workers}; spare: {', '.join(str(pid) for pid in info['spare']) or 'none'}\n"
        f"  snapshot {info['snapshot']} pushed, {info['applied']} served by every worker",
        highlight=False,
    )
    if info.get("error"):
        console.print(f"  [red]refused:[/] {escape(info['error'])}", highlight=False)


def _left_running(replicas: list[dict[str, Any]], *, among_others: bool) -> str:
    """What runs on, found by knocking at each replica's address rather than assumed."""
    running = [r["id"] for r in replicas if r.get("address") and _listening(r["address"])]
    if not running:
        return "no replica left running"
    why = "the other porteros on this Redis keep them for the next leader" if among_others else "they did not stop"
    return f"{len(running)} replica(s) still running ({', '.join(running)}): {why}"


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def _call(work: Any, file: Path) -> Any:
    try:
        return work(Context.client(file))
    except CliError as exc:
        raise fail(str(exc)) from None
