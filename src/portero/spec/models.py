"""Pydantic models of `portero.yaml`.

Strict on purpose: a wrong type, an unknown key or an out-of-range number is refused with its field path
rather than coerced, because a spec that means something other than what was written is worse than none.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shlex
import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ADDRESS_PATTERN = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$"

Seconds = Annotated[float, Field(gt=0, le=86_400)]
Percent = Annotated[float, Field(ge=0, le=100)]
Port = Annotated[int, Field(ge=1, le=65_535)]
EngineAddress = Annotated[str, Field(pattern=r"^(unix|tcp|http|https)://\S+$", max_length=512)]
PORT_BLOCK = 100  # ports per service revision on the swarm runtime (block + slot, slots 1..99)
LIST = Field(strict=False)  # YAML lists become the frozen models' tuples; their items stay strict
# Every string and list has a bound, so that a spec cannot make portero hold or send more than it means to.
Host = Annotated[str, Field(min_length=1, max_length=253)]
Arg = Annotated[str, Field(max_length=65_536)]  # one argument or env value; Linux refuses one over 128 KiB at exec
PathText = Annotated[str, Field(min_length=1, max_length=4_096)]  # PATH_MAX
FEW, MANY = Field(max_length=100), Field(max_length=1_000)
# A user or group: a name as useradd takes it, or a number (uid, gid) below 2^32 - 1.
ACCOUNT_PATTERN = r"^([a-z_][a-z0-9_.-]{0,31}|[0-9]{1,10})$"
# Variables of portero itself: never passed from its environment to a replica (PORTERO_TOKEN is an admin secret).
PORTERO_PREFIX = "PORTERO_"
MAX_FORMAT_WIDTH = 100  # in an alert summary template
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to setuid


class Model(BaseModel):
    # A model's validator is built when first used, not at import, and the docstrings under its fields are read by
    # reference.py alone: a router worker, which validates two models, starts 0.4 s sooner.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False, defer_build=True)


class AdminTls(Model):
    """HTTPS for the admin API: a certificate of its own (files), or one the router serves (given or obtained over
    ACME, and renewed: the API takes the new one for its new connections)."""

    cert_file: PathText | None = None
    """PEM file with the API's certificate and its chain."""
    key_file: PathText | None = None
    """PEM file with its private key; unset: the key is in `cert_file` too."""
    router_host: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")] | None = None
    """Serve the router's certificate for this host instead (`router.tls`); until it is first obtained, the API
    answers with a temporary self-signed one."""
    ca_file: PathText | None = None
    """CA bundle the CLI checks the API's certificate against (a private CA); the system's roots when unset."""

    @model_validator(mode="after")
    def _one_source(self) -> AdminTls:
        if (self.cert_file is None) == (self.router_host is None):
            raise ValueError("needs exactly one of `cert_file` (its own certificate) or `router_host`")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file: goes with `cert_file`")
        return self


class AdminSettings(Model):
    """Where the management API listens. Loopback by default: it can stop and start the app."""

    host: Host = "127.0.0.1"
    """Address of the admin API. Anything but loopback exposes replica control to that network."""
    port: Port = 9900
    """Port of the admin API; the CLI finds it through `.portero/admin.json` or this file."""
    request_timeout_s: Seconds = 10
    """A request (head and body) must arrive whole within this, or the connection gets 408 and is closed."""
    idle_timeout_s: Seconds = 5
    """A keep-alive connection without a request is closed after this."""
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Open connections at most; more are closed at once (the router, in its own processes, is not affected)."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 4 << 20
    """Largest request body (a spec, a deploy); larger gets 413 before it is read."""
    tls: AdminTls | None = None
    """Serve the admin API over HTTPS (docs/tls.md); plain HTTP when unset."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls is not None else 'http'}://{host}:{self.port}"


class Hsts(Model):
    """`Strict-Transport-Security` on a route's HTTPS answers (RFC 6797): browsers then use HTTPS alone for the
    host, for `max_age_s`. Never sent over plain HTTP, where it means nothing."""

    max_age_s: Annotated[int, Field(ge=0, le=2 * 365 * 86_400)] = 31_536_000
    """How long browsers remember it (0 makes them forget it)."""
    include_subdomains: bool = False
    """Every subdomain of the host too (`includeSubDomains`)."""
    preload: bool = False
    """Ask to be on browsers' built-in list (`preload`; also needs `include_subdomains` and a year or more)."""

    @property
    def header(self) -> str:
        value = f"max-age={self.max_age_s}"
        value += "; includeSubDomains" if self.include_subdomains else ""
        return value + ("; preload" if self.preload else "")


class Route(Model):
    """Requests whose Host and path match go to `service`; the longest matching prefix wins."""

    host: Annotated[str, Field(pattern=r"^(\*|(\*\.)?[A-Za-z0-9.-]{1,253})$")] = "*"
    """Exact host, `*.example.com` (any subdomain) or `*` (any)."""
    prefix: Annotated[str, Field(pattern=r"^/[!-~]*$", max_length=512)] = "/"
    """Path prefix."""
    service: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Service that serves the matching requests."""
    redirect_https: bool = False
    """Answer this route's plain-HTTP requests with 308 to the same URL over HTTPS (needs `router.tls`); ACME's
    HTTP-01 challenges are still answered over HTTP."""
    hsts: Hsts | None = None
    """Send `Strict-Transport-Security` with this route's HTTPS answers (needs `router.tls`)."""


class EndpointHealth(Model):
    """Active checks of endpoints portero does not run (its replicas are checked by the supervisor)."""

    interval_s: Seconds = 2
    """Seconds between checks."""
    timeout_s: Seconds = 1
    """Seconds a check may take."""
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    """Consecutive passes that bring a down endpoint back."""
    fall: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failures that take an endpoint down."""


class OutlierSettings(Model):
    """Passive outlier detection (Envoy's): endpoints that keep failing real requests are ejected."""

    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    """5xx responses or connect failures in a row that eject an endpoint."""
    base_ejection_s: Seconds = 30
    """First ejection; each further ejection lasts this times the number of ejections."""
    max_ejection_s: Seconds = 300
    """Cap of an ejection."""
    max_ejection_percent: Percent = 50
    """Never more than this share of a service's endpoints ejected at once."""


class BreakerSettings(Model):
    """Circuit breaker per endpoint: closed, open, half-open with probe requests."""

    failure_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Share of failed requests in the window that opens the breaker."""
    min_requests: Annotated[int, Field(ge=1, le=100_000)] = 20
    """Requests the window needs before the ratio counts."""
    window_s: Seconds = 10
    """Length of the rolling window."""
    open_s: Seconds = 5
    """How long an open breaker refuses requests before it lets probes through."""
    half_open_probes: Annotated[int, Field(ge=1, le=1000)] = 3
    """Probe requests that must succeed to close the breaker."""


class CertificateFiles(Model):
    """A certificate portero is given: PEM files the operator obtains and renews (portero reads them again when
    they change)."""

    cert_file: PathText
    """PEM file with the certificate, then its chain (intermediates), as CAs and certbot's `fullchain.pem` give it."""
    key_file: PathText | None = None
    """PEM file with its private key; unset: the key is in `cert_file` too."""
    hosts: Annotated[tuple[Annotated[str, Field(pattern=r"^(\*\.)?[A-Za-z0-9.-]{1,253}$")], ...], LIST, MANY] = ()
    """Names it is served for (SNI), `*.example.com` included; unset: the DNS names of its subjectAltName."""


LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


class AcmeSettings(Model):
    """Certificates obtained and renewed by portero over ACME (RFC 8555), one per host, proved by the HTTP-01
    challenge that the router answers on its HTTP listener: the CA must reach `router.port` as port 80 of each
    host (docs/tls.md)."""

    directory_url: Annotated[str, Field(pattern=r"^https://[!-~]+$", max_length=2_000)] = LETS_ENCRYPT
    """The ACME server's directory: Let's Encrypt's by default; any ACME CA's (its staging, a private one)."""
    email: Annotated[str, Field(pattern=r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}$")] | None = None
    """Contact of the ACME account (expiry warnings, policy changes); none when unset. Registering the account
    agrees to the CA's terms of service."""
    hosts: Annotated[tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")], ...], LIST, MANY] = ()
    """Hosts to obtain certificates for; unset: every exact host of `router.routes` that no given certificate
    (`certificates`) serves. Wildcards need DNS-01, which portero does not do: give those as files."""
    ca_file: PathText | None = None
    """CA bundle (PEM) that the ACME server's own HTTPS certificate is checked against, for a private ACME CA;
    the system's roots when unset."""
    key_type: Literal["ecdsa-p256", "rsa-2048"] = "ecdsa-p256"
    """Key of each certificate: ECDSA P-256 (smaller, faster handshakes) or RSA 2048 (very old clients)."""
    timeout_s: Annotated[float, Field(ge=5, le=3_600)] = 120
    """An order (challenges validated, certificate issued) must complete within this, or the attempt fails."""
    retry_initial_s: Annotated[float, Field(ge=1, le=86_400)] = 60
    """After a failed attempt the next one waits this long, doubling after each further failure..."""
    retry_max_s: Annotated[float, Field(ge=1, le=86_400)] = 3_600
    """...up to this."""


class TlsSettings(Model):
    """HTTPS listeners in the router: TLS 1.2 and 1.3 only, modern ciphers, the certificate picked by SNI."""

    host: Host | None = None
    """Address of the HTTPS listener; `router.host` when unset."""
    port: Port = 8443
    """Port of the HTTPS listener (443 in production, or a firewall forwarding 443 to it)."""
    public_port: Port | None = None
    """Port clients use for HTTPS, named in redirects; `port` when unset (set 443 when a firewall forwards it)."""
    certificates: Annotated[tuple[CertificateFiles, ...], LIST, MANY] = ()
    """Certificates given as files; they win over ACME for the names they serve."""
    acme: AcmeSettings | None = None
    """Obtain and renew certificates over ACME for the routes' hosts."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    """Oldest TLS version accepted (1.3 is always accepted, nothing older than 1.2 ever is)."""
    session_tickets: bool = True
    """Let clients resume sessions (TLS 1.3 tickets; each worker has its own keys); off, every new connection makes
    a full handshake."""
    handshake_timeout_s: Seconds = 10
    """A client must complete the handshake within this, or the connection is closed (counted as failed)."""

    @model_validator(mode="after")
    def _some_certificate(self) -> TlsSettings:
        if not self.certificates and self.acme is None:
            raise ValueError("needs `certificates` (files) or `acme` (obtained by portero), or both")
        return self


class RouterSettings(Model):
    """portero's HTTP load balancer in front of the services."""

    enabled: bool = True
    """Run the router."""
    host: Host = "127.0.0.1"
    """Address the router listens on."""
    port: Port = 8000
    """Port the router listens on."""
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    """Router worker processes sharing the listening socket (0: one per core portero may use), under a parent
    process of their own that outlives the control plane (docs/architecture.md)."""
    worker_stop_grace_s: Seconds = 10
    """A worker that is replaced (`portero router restart`, a new listener) or stopped stops accepting at once, then
    lets its requests in flight finish and closes each keep-alive connection after its next response, for at most
    this long."""
    trusted_proxies: Annotated[tuple[Annotated[str, Field(max_length=64)], ...], LIST, MANY] = ()
    """Networks (CIDR) whose X-Forwarded-* headers are kept and appended to; others' are replaced."""
    header_timeout_s: Seconds = 10
    """A client must send a whole request head within this time (slowloris)."""
    idle_timeout_s: Seconds = 60
    """A keep-alive client connection without a request is closed after this."""
    min_body_rate_bytes_s: Annotated[int, Field(ge=0, le=1 << 30)] = 1024
    """A request body slower than this on average, after `body_grace_s`, is cut (slow POST; 0: off)."""
    body_grace_s: Seconds = 10
    """Time a request body may take before its rate is judged."""
    max_body_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 1 << 30
    """Largest request body; larger gets 413."""
    connect_timeout_s: Seconds = 2
    """Seconds to open a connection to an endpoint."""
    response_timeout_s: Seconds = 60
    """Seconds an endpoint may take to start its response once it has the whole request, per try; then 504."""
    stall_timeout_s: Seconds = 60
    """Seconds an exchange may go without progress: an endpoint that stops sending its response, or stops reading
    the request body, is cut off (504 before the response head, a cut connection after it; it counts against the
    endpoint); a client that stops reading its response is disconnected (HAProxy's `timeout server`/`client`)."""
    max_response_head_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 64 * 1024
    """Largest response head an endpoint may send; larger gets 502 (nginx and HAProxy refuse them too)."""
    retry_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Tries of one request that may have reached an app, the first included. Tries that provably reached none
    (a refused connection, a reused keep-alive connection closed before answering) are retried apart from these."""
    retry_on_timeout: bool = False
    """Retry an idempotent request on another endpoint after `response_timeout_s` (the first endpoint may still be
    working on it, so off by default)."""
    retry_on_status: Annotated[tuple[Annotated[int, Field(ge=500, le=599)], ...], LIST] = ()
    """Endpoint answers (e.g. 503) after which an idempotent request is tried on another endpoint, within the retry
    budget; the client never sees the first answer."""
    retry_budget_ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Retries that cost budget (see `retry_attempts`) may be at most this share of the requests of the last 10 s..."""
    retry_budget_min: Annotated[int, Field(ge=0, le=1000)] = 10
    """...plus this many (Linkerd's floor: a quiet service's few failed requests are always retried)."""
    queue_timeout_s: Annotated[float, Field(ge=0, le=600)] = 10
    """How long a request waits for a ready endpoint before it gets 503 and the maintenance page."""
    queue_max: Annotated[int, Field(ge=0, le=1_000_000)] = 1000
    """Requests that may wait at once per service; more get 503 at once."""
    drain_timeout_s: Seconds = 30
    """How long a draining endpoint may finish its requests before they are cut."""
    pool_size: Annotated[int, Field(ge=0, le=10_000)] = 128
    """Idle keep-alive connections kept per endpoint."""
    serve_stale: bool = False
    """Serve the last good copy of a cacheable GET response when every endpoint fails."""
    health: EndpointHealth = EndpointHealth()
    """Active checks of endpoints portero does not run."""
    outlier: OutlierSettings = OutlierSettings()
    """Passive outlier detection."""
    breaker: BreakerSettings = BreakerSettings()
    """Circuit breaker per endpoint."""
    routes: Annotated[tuple[Route, ...], LIST, MANY] = ()
    """Host and path routes; without them every request goes to the first service."""
    tls: TlsSettings | None = None
    """HTTPS listeners and their certificates (docs/tls.md); plain HTTP alone when unset."""

    @model_validator(mode="after")
    def _tls_for_https_routes(self) -> RouterSettings:
        for i, route in enumerate(self.routes):
            if self.tls is None and (route.redirect_https or route.hsts is not None):
                field = "redirect_https" if route.redirect_https else "hsts"
                raise ValueError(f"routes.{i}.{field}: needs `router.tls` (an HTTPS listener)")
        tls = self.tls
        if tls is None:
            return self
        if tls.port == self.port and (tls.host or self.host) == self.host:
            raise ValueError(f"tls.port: {tls.port} is `router.port` already; HTTPS needs a port of its own")
        if tls.acme is not None and not self.acme_hosts:
            raise ValueError(
                "tls.acme: no host to obtain a certificate for; add routes with exact hosts or list `acme.hosts`"
            )
        return self

    @property
    def acme_hosts(self) -> tuple[str, ...]:
        """The hosts portero obtains certificates for: `tls.acme.hosts`, else the routes' exact hosts that no
        given certificate names."""
        if self.tls is None or self.tls.acme is None:
            return ()
        if self.tls.acme.hosts:
            return tuple(dict.fromkeys(h.lower() for h in self.tls.acme.hosts))
        given = {h.lower() for c in self.tls.certificates for h in c.hosts}
        exact = [r.host.lower() for r in self.routes if r.host != "*" and not r.host.startswith("*.")]
        return tuple(dict.fromkeys(h for h in exact if h not in given))

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"not a network: {network!r} (expected CIDR such as 10.0.0.0/8)") from None
        return value


class SwarmSettings(Model):
    """How the `swarm` runtime lays out its Swarm services (one per replica) and reaches the nodes."""

    ports: Annotated[str, Field(pattern=r"^\s*\d{1,5}\s*-\s*\d{1,5}\s*$")] = "20000-29999"
    """Host ports of the tasks, `FIRST-LAST`: each service revision takes a block of 100 from FIRST (its replicas
    listen on block + 1 .. block + 99), checked free on every node before use. Open this range from portero's
    machine to every node."""
    engines: dict[Annotated[str, Field(min_length=1, max_length=253)], EngineAddress] = Field(default_factory=dict)
    """Engine of each node (by hostname or node ID), e.g. `{worker-1: "tcp://10.0.0.12:2376"}`, from which
    portero reads its tasks' stats, logs and HEALTHCHECK and stops them; a node not listed is found through the
    Swarm by its Engine label `portero.engine=URL` (`dockerd --label`), and the manager's is `docker.host`."""
    engine_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    """Seconds a call to a node's Engine may take (a node that died must not hold up stats or a stop)."""
    update_parallelism: Annotated[int, Field(ge=0, le=100)] = 1
    """Tasks Swarm replaces at once when it updates a replica's service itself (0: all at once)."""
    update_delay_s: Annotated[float, Field(ge=0, le=3_600)] = 0
    """Pause between two batches of such an update."""
    update_order: Literal["start-first", "stop-first"] = "start-first"
    """`start-first`: the new task runs before the old one stops, so capacity never dips."""
    update_failure_action: Literal["pause", "continue", "rollback"] = "rollback"
    """What Swarm does when a task of an update fails to start."""
    update_monitor_s: Annotated[float, Field(ge=0, le=3_600)] = 5
    """How long Swarm watches each updated task for a failure."""
    task_timeout_s: Seconds = 60
    """Seconds a new task may take to be running before its start counts as failed (an image pull included)."""

    @model_validator(mode="before")
    @classmethod
    def _port_base_moved(cls, data: object) -> object:
        if isinstance(data, dict) and "port_base" in data:
            raise ValueError(f"port_base ({data['port_base']!r}) is replaced by `ports`, a range such as '20000-29999'")
        return data

    @field_validator("ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        first, last = (int(part) for part in value.split("-"))
        if not 1024 <= first <= last <= 65_535:
            raise ValueError(f"ports {value!r}: needs 1024 <= FIRST <= LAST <= 65535")
        if last - first + 1 < PORT_BLOCK:
            raise ValueError(f"ports {value!r}: holds {last - first + 1} ports, fewer than one block of {PORT_BLOCK}")
        return f"{first}-{last}"

    @property
    def port_range(self) -> tuple[int, int]:
        first, last = (int(part) for part in self.ports.split("-"))
        return first, last


class ProcessSettings(Model):
    """The `process` runtime."""

    kill_wait_s: Seconds = 5
    """Seconds a stop waits for a replica's processes to end after SIGKILL (the last rung of the stop ladder, after the
    service's `stop_grace_s`) before it counts as failed and is tried again; `portero down` waits this long too."""


class DockerSettings(Model):
    """The Docker Engine used by the `docker` and `swarm` runtimes."""

    host: Annotated[str, Field(min_length=1, max_length=4_096)] | None = None
    """Engine address, e.g. `unix:///var/run/docker.sock`; the SDK's default (`DOCKER_HOST`) when unset."""
    api_version: Annotated[str, Field(pattern=r"^[0-9]{1,3}\.[0-9]{1,3}$")] | None = None
    """Engine API version, e.g. `1.41`; negotiated when unset."""
    network: Literal["host", "bridge"] = "host"
    """`host`: a container shares the host's network and listens on its own free loopback port, given as `PORT`
    (engines without a bridge, like this project's CI). `bridge`: it listens on the service's `port` in its own
    network namespace, published on a free port of 127.0.0.1."""
    build_timeout_s: Seconds = 900
    """Seconds an image build may take before it is abandoned (and the spec refused)."""
    kill_wait_s: Seconds = 10
    """Seconds a stop waits for a container to end after SIGKILL (the last rung of the stop ladder, after the
    service's `stop_grace_s`) before it counts as failed and is tried again; `portero down` waits this long too."""
    swarm: SwarmSettings = SwarmSettings()
    """The `swarm` runtime."""


class StoreSettings(Model):
    """Where desired state, revisions and events live."""

    redis_url: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://", max_length=4_096)] | None = None
    """Redis URL for state shared by several porteros; the embedded SQLite file under the state dir when unset."""
    redis_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "portero"
    """Prefix of every Redis key and channel: porteros with the same Redis and prefix act as one (docs/redis.md)."""
    lease_s: Annotated[float, Field(ge=1, le=60)] = 5
    """Leader lease: when the leader stops renewing, another portero takes the controllers after this long."""
    renew_every_s: Annotated[float, Field(ge=0.1, le=20)] = 1.5
    """How often the leader renews its lease (well under `lease_s`: a renewal may be lost or slow)."""
    acquire_every_s: Annotated[float, Field(ge=0.1, le=20)] = 0.5
    """How often a follower tries to take a lease nobody holds."""
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1
    """Connect and read timeout of each Redis call: past it Redis counts as unreachable."""

    @model_validator(mode="after")
    def _renewal_fits_lease(self) -> StoreSettings:
        if self.renew_every_s * 2 > self.lease_s:
            raise ValueError(
                f"store.renew_every_s ({self.renew_every_s:g}) must be at most half of store.lease_s "
                f"({self.lease_s:g}), so that one lost renewal does not lose the lease"
            )
        return self


class SeriesSettings(Model):
    """The in-memory metric series: two resolutions, each a ring buffer, under one memory budget."""

    fine_step_s: Annotated[float, Field(ge=0.1, le=3_600)] = 1
    """Resolution of the recent series (samples within one step are averaged)."""
    fine_keep_s: Annotated[float, Field(ge=1, le=86_400)] = 3_600
    """How far back the recent series reach."""
    coarse_step_s: Annotated[float, Field(ge=1, le=86_400)] = 60
    """Resolution of the long series."""
    coarse_keep_s: Annotated[float, Field(ge=60, le=30 * 86_400)] = 86_400
    """How far back the long series reach; a series not updated for this long (a gone replica's) is dropped."""
    memory_budget_bytes: Annotated[int, Field(ge=1 << 20, le=1 << 32)] = 16 << 20
    """Most memory the series may take; it bounds their number (about 40 KiB each with the defaults)."""

    @model_validator(mode="after")
    def _tiers_ordered(self) -> SeriesSettings:
        if self.coarse_step_s < self.fine_step_s:
            raise ValueError(f"coarse_step_s ({self.coarse_step_s}) must not be below fine_step_s ({self.fine_step_s})")
        for tier in ("fine", "coarse"):
            step, keep = getattr(self, f"{tier}_step_s"), getattr(self, f"{tier}_keep_s")
            if keep < step or keep / step > 1_000_000:
                raise ValueError(f"{tier}_keep_s ({keep}) must hold 1..1000000 steps of {tier}_step_s ({step})")
        return self


class MonitoringSettings(Model):
    """Metrics collection and the seed's two threshold alerts."""

    enabled: bool = True
    """Collect metrics and evaluate alerts; when off, the monitoring routes answer 409 and `/metrics` says so."""
    interval_s: Annotated[float, Field(ge=0.1, le=60)] = 1
    """Seconds between samples of the host, the replicas, the router and portero; alerts are evaluated as often."""
    alert_threshold_cpu: Percent = 80
    """CPU percent above which the CPU alerts fire (the host's, and each replica's of one core)."""
    alert_threshold_memory: Percent = 85
    """Memory percent above which the memory alert fires."""
    series: SeriesSettings = SeriesSettings()
    """Retention and memory budget of the metric series."""


class AutoscaleSettings(Model):
    """The seed's threshold autoscaling, bounded by each service's `replicas.min`/`max`."""

    enabled: bool = False
    """Let the autoscaler move replica counts."""
    scale_up_threshold: Percent = 70
    """Average CPU percent above which a service scales up."""
    scale_down_threshold: Percent = 30
    """Average CPU percent below which a service scales down; must be below `scale_up_threshold`."""

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> AutoscaleSettings:
        if self.scale_down_threshold >= self.scale_up_threshold:
            raise ValueError(
                f"scale_down_threshold ({self.scale_down_threshold}) must be below "
                f"scale_up_threshold ({self.scale_up_threshold})"
            )
        return self


METRIC_PATTERN = r"^[a-z_][a-z0-9_]{0,99}$"
LABEL_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"
Labels = Annotated[dict[Annotated[str, Field(pattern=LABEL_PATTERN)], Annotated[str, Field(max_length=200)]], FEW]


class MetricTarget(Model):
    """A custom autoscaling signal: a metric of the replicas (scraped from the app, or portero's own), averaged
    per ready replica like Kubernetes' Pods metrics with an `AverageValue` target."""

    metric: Annotated[str, Field(pattern=METRIC_PATTERN)]
    """Series name, e.g. `queue_depth` or `resilience_calls_total` (series of each replica, by its `replica` label)."""
    match: Labels = Field(default_factory=dict)
    """Only series with these label values, e.g. `{policy: payments, outcome: rejected}`."""
    aggregate: Literal["last", "avg", "max", "rate"] = "last"
    """How one series' samples within `window_s` become a value; `rate` (per second) is for counters."""
    window_s: Annotated[float, Field(gt=0, le=3_600)] = 30
    """Seconds of samples `aggregate` reads."""
    target: Annotated[float, Field(gt=0, le=1e12)]
    """Target value per ready replica (the series of one replica are added up first)."""


class ServiceAutoscale(Model):
    """How the autoscaler moves one service's replica count (within `replicas.min`/`max`)."""

    enabled: bool = True
    """Scale this service (when the autoscaler is on: `autoscale.enabled`, AUTO_SCALE_ENABLED)."""
    mode: Literal["target", "threshold"] = "target"
    """`target`: track targets like Kubernetes' HPA; `threshold`: the seed's CPU thresholds, `step` at a time."""
    cpu_percent: Percent | None = 70
    """Target CPU percent of one core per replica (unset: not a signal)."""
    in_flight: Annotated[float, Field(gt=0, le=10_000)] | None = None
    """Target requests in flight (and queued) per replica: the best signal for a request-bound app."""
    requests_per_second: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    """Target requests per second per replica."""
    p95_s: Seconds | None = None
    """Target p95 latency."""
    metrics: Annotated[tuple[MetricTarget, ...], LIST, FEW] = ()
    """Custom metric targets (e.g. scraped from the app, see `services.<name>.metrics`), beside the ones above."""
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.1
    """No change while every signal is within this fraction of its target (HPA's 0.1)."""
    step: Annotated[int, Field(ge=1, le=100)] = 1
    """Threshold mode: replicas added or removed per decision."""
    tick_s: Seconds = 2
    """How often signals are read and a decision is made."""
    scale_up_cooldown_s: Annotated[float, Field(ge=0, le=3_600)] = 0
    """Wait after a change before scaling up again (panic ignores it)."""
    scale_down_cooldown_s: Annotated[float, Field(ge=0, le=3_600)] = 30
    """Wait after any change before scaling down."""
    stabilization_s: Annotated[float, Field(ge=0, le=86_400)] = 300
    """Scale down only to the largest recommendation of this window (HPA's 300 s)."""
    rate_period_s: Seconds = 15
    """Scale-up rate limit: at most double or `rate_max_add` more per period (HPA's policies)."""
    rate_max_add: Annotated[int, Field(ge=1, le=100)] = 4
    """...whichever is larger."""
    panic_factor: Annotated[float, Field(ge=1, le=100)] = 2
    """A signal at this many times its target is a burst (Knative's panic): scale up at once, never down."""
    panic_s: Annotated[float, Field(ge=0, le=3_600)] = 6
    """The burst window: signals averaged over it are compared with `panic_factor` × target; panic lasts this long
    after the last burst."""
    stable_window_s: Annotated[float, Field(gt=0, le=3_600)] = 60
    """Signals are averaged over this window for regular decisions, so that noise moves nothing."""
    idle_to_zero_s: Annotated[float, Field(ge=0, le=86_400)] = 300
    """With `replicas.min: 0`: no request for this long takes the service to zero."""


class AnalysisSettings(Model):
    """When a new revision's requests fail a deployment: absolute limits, and limits against the old revision."""

    window_s: Seconds = 30
    """How long the new revision is watched after the switch (blue-green) or at each canary step."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    """Fewer requests than this in the window say too little: the verdict is inconclusive (not a failure)."""
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Share of 5xx answers above which the new revision fails."""
    max_error_rate_increase: Annotated[float, Field(ge=0, le=1)] = 0.02
    """...or above the old revision's share plus this."""
    max_p95_s: Seconds | None = None
    """p95 latency above which the new revision fails (unset: no absolute limit)."""
    max_p95_ratio: Annotated[float, Field(ge=1, le=100)] = 2.0
    """...or above this many times the old revision's p95..."""
    p95_floor_s: Annotated[float, Field(ge=0, le=60)] = 0.05
    """...and above this, so that noise between fast answers fails nothing."""


StrategyName = Literal["rolling", "blue-green", "canary"]  # deploy/strategy.py has one object for each


class DeploySettings(Model):
    """How a new revision replaces the running one."""

    strategy: StrategyName = "rolling"
    """`rolling`, `blue-green` or `canary`."""
    max_surge: Annotated[int, Field(ge=0, le=100)] = 1
    """Rolling: replicas above the count while replacing."""
    max_unavailable: Annotated[int, Field(ge=0, le=100)] = 0
    """Rolling: replicas below the count while replacing."""
    progress_deadline_s: Seconds = 120
    """A deployment that makes no progress for this long while it waits for new replicas is rolled back
    (`rolled_back`, reason: its ready count); the old revision keeps serving. Every new replica ready and every
    step restarts it; it does not run during planned pauses (a canary step's, blue-green's watch)."""
    keep_old_s: Annotated[float, Field(ge=0, le=86_400)] = 30
    """Blue-green: how long the old group stays (without traffic) after the switch, for an instant rollback."""
    canary_steps: Annotated[tuple[Annotated[float, Field(gt=0, le=100)], ...], LIST, FEW] = (10, 50, 100)
    """Canary: traffic percentages, in order; the last should be 100."""
    canary_pause_s: Annotated[float, Field(ge=0, le=86_400)] = 30
    """Canary: time at each step before its analysis decides."""
    analysis: AnalysisSettings = AnalysisSettings()
    """The gates."""

    @model_validator(mode="after")
    def _rolling_can_move(self) -> DeploySettings:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: a rolling deployment could not move")
        return self

    @field_validator("canary_steps")
    @classmethod
    def _increasing(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if not steps or list(steps) != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError(f"canary_steps must increase and end at 100 (got {list(steps)})")
        return steps


class AlertRule(Model):
    """A threshold rule over a metric series, with Prometheus' `for` and `keep_firing_for`.

    Every series of `metric` whose labels match `match` is judged on its own, so one rule over
    `replica_cpu_percent` gives one alert per replica."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Rule name, lowercase with dashes; the alert's `alertname`. A rule named like a built-in one replaces it."""
    metric: Annotated[str, Field(pattern=METRIC_PATTERN)]
    """Series name the rule watches, e.g. `replica_cpu_percent` (docs/monitoring.md lists them)."""
    match: Labels = Field(default_factory=dict)
    """Only series with these label values, e.g. `{service: portal}`."""
    aggregate: Literal["last", "avg", "min", "max", "p50", "p95", "p99", "rate", "increase"] = "last"
    """How the samples within `window_s` become one value; `rate` (per second) and `increase` are for counters."""
    window_s: Annotated[float, Field(ge=0, le=86_400)] = 60
    """Seconds of samples the aggregate reads (`last` reads only the newest)."""
    per: Annotated[str, Field(pattern=METRIC_PATTERN)] | None = None
    """Divide by the same aggregate of this series with the same labels (e.g. 5xx responses per response)."""
    op: Literal[">", ">=", "<", "<="] = ">"
    """Comparison of the value with `threshold`."""
    threshold: Annotated[float, Field(ge=-1e18, le=1e18)]
    """Value the metric is compared with."""
    for_s: Annotated[float, Field(ge=0, le=86_400)] = 60
    """How long the condition must hold before the alert fires (pending until then)."""
    keep_firing_for_s: Annotated[float, Field(ge=0, le=86_400)] = 0
    """How long the alert keeps firing after the condition clears."""
    severity: Literal["info", "warning", "critical"] = "warning"
    """`info`, `warning` or `critical`; the alert's `severity` label."""
    labels: Labels = Field(default_factory=dict)
    """Extra labels of the alert (for grouping and routing by the receivers)."""
    summary: Annotated[str, Field(max_length=500)] | None = None
    """Summary annotation; `{value}`, `{threshold}` and the series' labels (`{replica}`) are filled in, with
    Python's format specs up to a width or precision of 100 (`{value:>8}`)."""

    @field_validator("summary")
    @classmethod
    def _bounded_template(cls, template: str | None) -> str | None:
        """`{value:>50000000}` would make a 50 MB summary, kept in every event and dashboard answer, and
        `{value.__class__}` reaches into Python: only plain names, and small widths."""
        try:
            parts = list(string.Formatter().parse(template or ""))
        except ValueError:
            return template  # not a template at all: shown as written (alerts.py)
        for _, name, spec, _ in parts:
            if name is None:
                continue
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{{{name}}}: a placeholder is a label name, `value` or `threshold`")
            if "{" in (spec or "") or any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"[0-9]+", spec or "")):
                raise ValueError(
                    f"{{{name}:{spec}}}: a width or precision is at most {MAX_FORMAT_WIDTH}, written out (not a field)"
                )
        return template


class Webhook(Model):
    """A receiver of alert notifications, sent as Alertmanager's webhook payload (version 4)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    """Receiver name in the payload; `webhook-N` (its position, from 1) when unset."""
    url: Annotated[str, Field(pattern=r"^https?://[!-~]+$", max_length=2_000)]
    """Where the payload is POSTed."""
    group_by: Annotated[tuple[Annotated[str, Field(pattern=LABEL_PATTERN)], ...], LIST, FEW] = ("alertname",)
    """Alerts with the same values of these labels go out together, in one payload."""
    group_wait_s: Annotated[float, Field(ge=0, le=86_400)] = 10
    """How long a new group waits for more alerts before its first notification."""
    group_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 60
    """Least time between two notifications of a group that changed (new alerts, resolved ones)."""
    repeat_interval_s: Annotated[float, Field(ge=1, le=30 * 86_400)] = 14_400
    """A group still firing, unchanged, is sent again after this long."""
    send_resolved: bool = True
    """Also notify alerts that resolved."""
    timeout_s: Seconds = 5
    """Seconds one delivery attempt may take."""
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Attempts of one notification; between them the delay doubles from 0.5 s up to 30 s."""


class AlertmanagerSettings(Model):
    """Alertmanagers that portero pushes its alerts to, through their API v2 (`POST /api/v2/alerts`), as
    Prometheus does: every firing alert again and again, each resolved one with its end; Alertmanager groups,
    silences, inhibits and routes them itself."""

    urls: Annotated[
        tuple[Annotated[str, Field(pattern=r"^https?://[!-~]+$", max_length=2_000)], ...],
        LIST,
        Field(min_length=1, max_length=10),
    ]
    """Base URLs of the Alertmanagers (`http://127.0.0.1:9093`); each one gets every alert (a cluster of them
    deduplicates). `/api/v2/alerts` is added unless the URL ends with it."""
    resend_interval_s: Annotated[float, Field(ge=1, le=3_600)] = 60
    """A firing alert is pushed again this often, so that an Alertmanager that restarted learns it again; its
    `endsAt` is 4 times this ahead, so an alert portero stops pushing resolves by itself (Prometheus'
    `--rules.alert.resend-delay`)."""
    timeout_s: Seconds = 10
    """Seconds one push may take."""
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    """Attempts of one push; between them the delay doubles from 0.5 s."""

    @property
    def endpoints(self) -> list[str]:
        return [
            url if url.rstrip("/").endswith("/api/v2/alerts") else url.rstrip("/") + "/api/v2/alerts"
            for url in self.urls
        ]


class AlertSettings(Model):
    """Alert rules beside the built-in ones, and who is told when they fire."""

    default_rules: bool = True
    """Evaluate the built-in rules (host CPU and memory, replica CPU, replica down, crash loop, error rate,
    p95 latency; docs/monitoring.md); a rule in `rules` with the same name replaces one."""
    rules: Annotated[tuple[AlertRule, ...], LIST, MANY] = ()
    """List of rules."""
    webhooks: Annotated[tuple[Webhook, ...], LIST, FEW] = ()
    """Receivers of the notifications."""
    alertmanager: AlertmanagerSettings | None = None
    """Alertmanagers to push every alert to (API v2); beside `webhooks`, or instead of them."""
    external_url: Annotated[str, Field(pattern=r"^https?://[!-~]+$", max_length=2_000)] | None = None
    """URL of this portero as receivers should link to it (`externalURL`); the admin API's when unset."""

    @model_validator(mode="after")
    def _unique_names(self) -> AlertSettings:
        for kind, names in (("rules", [r.name for r in self.rules]), ("webhooks", [w.name for w in self.webhooks])):
            repeated = sorted({n for n in names if n is not None and names.count(n) > 1})
            if repeated:
                raise ValueError(f"{kind}: names must be unique, {', '.join(repeated)} repeats")
        return self


class Replicas(Model):
    """How many replicas: `initial` (defaults to `min` when only `min` is given) is where a service starts."""

    initial: Annotated[int, Field(ge=0, le=100)] = 1
    """Replicas when the service first starts or when this value changes; `portero scale` moves it later."""
    min: Annotated[int, Field(ge=0, le=100)] = 1
    """Fewest replicas `portero scale` and the autoscaler may set (0 allows scale to zero)."""
    max: Annotated[int, Field(ge=1, le=100)] = 10
    """Most replicas `portero scale` and the autoscaler may set."""

    @model_validator(mode="before")
    @classmethod
    def _initial_defaults_to_min(cls, data: object) -> object:
        if isinstance(data, dict) and "initial" not in data and "min" in data:
            return {**data, "initial": data["min"]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        if not self.min <= self.initial <= self.max:
            raise ValueError(f"initial ({self.initial}) must lie within min..max ({self.min}..{self.max})")
        return self


class HealthCheck(Model):
    """An HTTP readiness check, with HAProxy's rise/fall thresholds and Kubernetes' start period."""

    path: Annotated[str, Field(pattern=r"^/[!-~]*$", max_length=512)] = "/health"
    """HTTP path probed with GET; any 2xx or 3xx passes."""
    interval_s: Seconds = 2
    """Seconds between checks of a started replica (a starting one is checked every 0.2 s)."""
    timeout_s: Seconds = 1
    """Seconds a check may take before it counts as failed."""
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    """Consecutive passes that make a replica ready (HAProxy's `rise`)."""
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failures that take a ready replica out of rotation (HAProxy's `fall`)."""
    start_period_s: Annotated[float, Field(ge=0, le=3_600)] = 60
    """Seconds a new replica has to pass its first check before it is restarted."""
    restart_after_s: Seconds = 30
    """Seconds an unhealthy replica may stay so before it is restarted (liveness)."""


class RestartPolicy(Model):
    """CrashLoopBackOff: 1 s, doubling, capped; reset after a run this long without a crash."""

    initial_backoff_s: Seconds = 1
    """Delay before the first restart of a crashed replica; each further crash doubles it."""
    max_backoff_s: Seconds = 60
    """Cap of the doubling delay."""
    reset_after_s: Seconds = 60
    """A replica that ran this long before it crashed restarts after `initial_backoff_s` again."""


class Build(Model):
    """How to build the image of a container service."""

    context: PathText = "."
    """Build context, relative to the spec file."""
    dockerfile: PathText = "Dockerfile"
    """Dockerfile, relative to the context."""
    args: Annotated[dict[Annotated[str, Field(pattern=ENV_KEY_PATTERN, max_length=256)], Arg], MANY] = Field(
        default_factory=dict
    )
    """Build arguments (`ARG`s)."""


class Resources(Model):
    """Limits of one container replica (docker and swarm runtimes); unset: no limit."""

    cpus: Annotated[float, Field(gt=0, le=256)] | None = None
    """CPU time of this many cores (`docker run --cpus`)."""
    memory_mib: Annotated[int, Field(ge=6, le=1 << 22)] | None = None
    """Memory in MiB (`docker run --memory`); the kernel kills the replica past it."""


class StaticEndpoint(Model):
    """A server portero does not run (registered in the file rather than through the API)."""

    address: Annotated[str, Field(pattern=ADDRESS_PATTERN)]
    """`host:port` of the server."""
    weight: Annotated[int, Field(ge=0, le=1000)] = 1
    """Share of traffic relative to the service's other endpoints (0: none)."""


class Balance(Model):
    """How the router spreads a service's requests over its endpoints."""

    algorithm: Literal["round_robin", "least_requests", "hash"] = "round_robin"
    """`round_robin` (smooth weighted, nginx's), `least_requests` (power of two choices) or `hash` (consistent
    hashing of `hash_header` or `hash_cookie`, for sticky sessions)."""
    hash_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = None
    """Header whose value picks the endpoint with `algorithm: hash`."""
    hash_cookie: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    """Cookie whose value picks the endpoint with `algorithm: hash`."""
    weight: Annotated[int, Field(ge=0, le=1000)] = 1
    """Weight of each replica portero runs."""
    slow_start_s: Annotated[float, Field(ge=0, le=3_600)] = 5
    """A new or recovered endpoint ramps from 10% to its full weight over this many seconds (0: off)."""
    max_in_flight: Annotated[int, Field(ge=0, le=100_000)] = 0
    """Most requests one endpoint serves at once; more wait in the service's queue (0: no limit)."""

    @model_validator(mode="after")
    def _hash_needs_a_key(self) -> Balance:
        if self.algorithm == "hash" and (self.hash_header is None) == (self.hash_cookie is None):
            raise ValueError("algorithm `hash` needs exactly one of hash_header or hash_cookie")
        return self


class MetricsScrape(Model):
    """Scrape each replica's own Prometheus endpoint into portero's monitor (alerts, autoscaling, the API)."""

    path: Annotated[str, Field(pattern=r"^/[!-~]*$", max_length=500)] = "/metrics"
    """Path of the endpoint on the replica's port."""
    interval_s: Annotated[float, Field(ge=0.5, le=3_600)] = 5
    """Seconds between scrapes of one replica (at least the monitor's `monitoring.interval_s`)."""
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2
    """Seconds one scrape may take."""
    max_series: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    """Most series kept from one replica's scrape; the rest are dropped (and counted) to protect the budget."""


class ServiceSpec(Model):
    command: Annotated[tuple[Arg, ...], MANY] | None = None
    """Argv of a replica (process runtime). A string is split like a shell would, but never run by one;
    `$PORT`, `$PORTERO_REPLICA_ID` and other variables of the replica's environment are substituted."""
    workdir: PathText | None = None
    """Working directory of a replica, relative to the spec file (the spec file's directory when unset)."""
    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """Image of a container replica (docker and swarm runtimes), e.g. `registry.example/portal:v2`."""
    build: Build | None = None
    """Build the image from a Dockerfile (tagged `image` too when both are set). Each apply builds (Docker's layer
    cache makes an unchanged context fast) and a changed image makes a new revision."""
    resources: Resources = Resources()
    """CPU and memory limits of each container replica."""
    version: Annotated[str, Field(max_length=64)] | None = None
    """Version label of the app; given to replicas as `APP_VERSION` unless `env` sets it."""
    port: Port = 5000
    """Port the app listens on inside a container; a process replica gets its own free port as `PORT`."""
    env: Annotated[dict[Annotated[str, Field(pattern=ENV_KEY_PATTERN, max_length=256)], Arg], MANY] = Field(
        default_factory=dict
    )
    """Environment of the replicas, beside the variables portero sets (`PORT`, `PORTERO_REPLICA_ID`, ...) and,
    with the process runtime, a few of the host's (`PATH`, `LANG`, `TZ`...; docs/security.md)."""
    env_from_host: Annotated[tuple[Annotated[str, Field(pattern=ENV_KEY_PATTERN, max_length=256)], ...], LIST, FEW] = ()
    """Names of variables of portero's own environment passed on to the replicas (e.g. `[AWS_REGION]`); nothing
    else of it is. `env` wins over them; `PORTERO_*` (the admin token among them) cannot be passed."""
    user: Annotated[str, Field(pattern=ACCOUNT_PATTERN)] | None = None
    """User the replicas run as: a name or a uid. Process runtime: portero must run as root; a replica gets the
    user's groups, `HOME`, `USER` and `LOGNAME`, and cannot read portero's state directory. Containers: the
    container's user (`docker run --user`). Unset: portero's own user (process; warned about when it is root),
    or the image's (containers)."""
    group: Annotated[str, Field(pattern=ACCOUNT_PATTERN)] | None = None
    """Group the replicas run as: a name or a gid; the user's primary group when unset."""
    replicas: Replicas = Replicas()
    """How many replicas."""
    autoscale: ServiceAutoscale = ServiceAutoscale()
    """How the autoscaler moves this service's count."""
    health: HealthCheck = HealthCheck()
    """Readiness and liveness check."""
    restart: RestartPolicy = RestartPolicy()
    """Restart delays after a crash."""
    stop_grace_s: Seconds = 10
    """Seconds between SIGTERM and SIGKILL when a replica stops."""
    deploy: DeploySettings | None = None
    """This service's deploy strategy; the top-level `deploy` when unset."""
    balance: Balance = Balance()
    """Load balancing of this service's traffic."""
    endpoints: Annotated[tuple[StaticEndpoint, ...], LIST, MANY] = ()
    """Servers portero does not run, routed beside (or instead of) its replicas."""
    metrics: MetricsScrape | None = None
    """Scrape the app's own Prometheus metrics from each replica (e.g. `{path: /metrics, interval_s: 5}`)."""

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("command must not be empty")
        return value

    @field_validator("env_from_host")
    @classmethod
    def _not_portero_own(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        own = [name for name in names if name.upper().startswith(PORTERO_PREFIX)]
        if own:
            raise ValueError(
                f"{', '.join(own)}: portero's own variables (its admin token among them) are never passed to "
                "replicas; set a value in `env` instead"
            )
        return names

    @field_validator("user", "group", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # `user: 1000`

    @field_validator("user", "group")
    @classmethod
    def _id_in_range(cls, value: str | None) -> str | None:
        if value is not None and value.isdigit() and int(value) > MAX_ID:
            raise ValueError(f"a numeric id must be at most {MAX_ID}")
        return value

    @model_validator(mode="after")
    def _something_to_run(self) -> ServiceSpec:
        if not self.managed and not self.endpoints:
            raise ValueError("a service needs `command` (process runtime), `image`/`build` (containers) or `endpoints`")
        return self

    @property
    def managed(self) -> bool:
        """Whether portero runs replicas of it (an `endpoints`-only service is routed, not run)."""
        return self.command is not None or self.image is not None or self.build is not None

    def template_digest(self) -> str:
        """Digest of what makes a replica what it is; replica counts and checks are not part of it."""
        template = self.model_dump(include={"command", "workdir", "image", "build", "version", "port", "env"})
        # Fields added later count only when set: digests of revisions made before they existed hold.
        if self.resources != Resources():
            template["resources"] = self.resources.model_dump()
        template |= self.model_dump(include={"user", "group", "env_from_host"}, exclude_defaults=True)
        blob = json.dumps(template, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Spec(Model):
    """The whole `portero.yaml`."""

    version: Literal[1] = 1
    """Version of the spec format."""
    runtime: Literal["process", "docker", "swarm"] = "process"
    """Where replicas run: `process` (local processes, the embedded default), `docker` or `swarm`."""
    admin: AdminSettings = AdminSettings()
    """The management API."""
    router: RouterSettings = RouterSettings()
    """The HTTP load balancer."""
    process: ProcessSettings = ProcessSettings()
    """The `process` runtime."""
    docker: DockerSettings = DockerSettings()
    """The Docker Engine."""
    store: StoreSettings = StoreSettings()
    """The state store."""
    monitoring: MonitoringSettings = MonitoringSettings()
    """Metrics and the seed's alert thresholds."""
    autoscale: AutoscaleSettings = AutoscaleSettings()
    """The autoscaler."""
    deploy: DeploySettings = DeploySettings()
    """Default deploy strategy of every service."""
    alerts: AlertSettings = AlertSettings()
    """Alert rules."""
    services: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ServiceSpec] = Field(min_length=1, max_length=100)
    """The services, by name (lowercase letters, digits and dashes, starting with a letter)."""

    @model_validator(mode="after")
    def _runnable_on_runtime(self) -> Spec:
        if self.runtime == "process":
            missing = [
                f"services.{name}.command"
                for name, svc in self.services.items()
                if svc.command is None and (svc.image is not None or svc.build is not None)
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required by runtime `process`")
            ignored = [
                f"services.{name}.{field}"
                for name, svc in self.services.items()
                for field in ("image", "build")
                if getattr(svc, field) is not None
            ]
            if ignored:
                raise ValueError(
                    f"{', '.join(ignored)}: runtime `process` runs `command` and would ignore it (it applies to "
                    "runtimes docker and swarm): remove it, or set `runtime`"
                )
        else:
            alone = [f"services.{name}.group" for name, svc in self.services.items() if svc.group and not svc.user]
            if alone:
                raise ValueError(f"{', '.join(alone)}: needs `user` too with runtime `{self.runtime}` (`--user u:g`)")
            missing = [
                f"services.{name}.image or .build"
                for name, svc in self.services.items()
                if svc.managed and svc.image is None and svc.build is None
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required by runtime `{self.runtime}`")
        admin_tls = self.admin.tls
        if admin_tls is not None and admin_tls.router_host is not None and self.router.tls is None:
            raise ValueError("admin.tls.router_host: needs `router.tls` (the router's certificates)")
        unknown = [
            f"router.routes.{i}.service: no service named {r.service!r}"
            for i, r in enumerate(self.router.routes)
            if r.service not in self.services
        ]
        if unknown:
            raise ValueError("; ".join(unknown))
        return self
