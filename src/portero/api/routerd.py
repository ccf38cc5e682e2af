"""The router's processes through the API: what runs (parent, workers, the snapshot each serves) and a hitless
restart of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from portero.control import ControlPlane
from portero.dataplane.build import BUILD
from portero.dataplane.link import Hello, RouterUnavailable
from portero.dataplane.plane import DataPlane
from portero.errors import NotFound, Refused
from portero.events import Event


class WorkerOut(BaseModel):
    number: int
    pid: int
    version: int = Field(description="The snapshot version it serves.")


class RouterProcessesOut(BaseModel):
    pid: int = Field(description="The router's parent process.")
    build: str = Field(description="The router code it runs (portero's version and a digest of its sources).")
    control_build: str = Field(description="This control plane's; a restart makes the router run it.")
    adopted: bool = Field(description="Found running when this portero started (it outlived the last one).")
    workers: list[WorkerOut]
    spare: list[int] = Field(description="Spare workers (loaded, not accepting): one takes a dead worker's place.")
    listeners: list[str]
    snapshot: int = Field(description="The latest snapshot version the control plane pushed.")
    applied: int = Field(description="The newest version every worker serves.")
    push_p99_s: float | None = Field(description="Over the last 1,000 pushes: seconds until every worker served it.")
    pushes: list[tuple[float, float]] = Field(
        description="The last 200 pushes: (Unix time, seconds until every worker served it)."
    )
    error: str | None = Field(description="The last snapshot the router refused, and why.")


class CertificateOut(BaseModel):
    host: str = Field(description="The host it is obtained for (ACME), or the first name of a given one.")
    names: list[str] = Field(description="The names it serves (SNI).")
    source: str = Field(description="`acme` (obtained and renewed by portero) or `file` (given).")
    state: str = Field(description="valid, expired, missing, obtaining, renewing or failing.")
    not_before: float | None = Field(description="Unix time it became valid; null: no certificate yet.")
    not_after: float | None = Field(description="Unix time it expires.")
    renew_at: float | None = Field(description="When portero renews it (two thirds of its life); null for files.")
    serial: str | None
    issuer: str | None
    failures: int = Field(description="Attempts that failed in a row.")
    error: str | None = Field(description="Why the last attempt failed.")
    next_attempt_at: float | None = Field(description="When the leading portero orders next (ACME).")


class TlsOut(BaseModel):
    enabled: bool = Field(description="`router.tls` is set: the router listens for HTTPS.")
    directory_url: str | None = Field(description="The ACME directory certificates are obtained from.")
    certificates: list[CertificateOut]
    handshakes: dict[str, int] = Field(
        description="TLS handshakes since this portero started: by version, and `failed:<reason>`."
    )


def routes(control: ControlPlane, plane: DataPlane | None) -> APIRouter:
    api = APIRouter(prefix="/scalability/router", tags=["router"])

    def live() -> DataPlane:
        if plane is None:
            raise Refused("the router is disabled (router.enabled: false in the spec)")
        return plane

    def out(data: DataPlane, hello: Hello | None) -> RouterProcessesOut:
        if hello is None:
            raise Refused("the router does not answer (it is being started again)")
        times = sorted(seconds for _, seconds in data.push_times)
        return RouterProcessesOut(
            pid=hello.pid,
            build=hello.build,
            control_build=BUILD,
            adopted=data.link.adopted,
            workers=[WorkerOut(**w) for w in hello.workers],
            spare=list(hello.spare),
            listeners=hello.listeners,
            snapshot=data.table.version,
            applied=data.link.applied,
            push_p99_s=round(times[min(len(times) - 1, int(0.99 * len(times)))], 4) if times else None,
            pushes=[(round(at, 3), round(seconds, 5)) for at, seconds in list(data.push_times)[-200:]],
            error=data.link.error,
        )

    _tls_routes(api, live)

    @api.get("", summary="The router's processes")
    async def processes() -> RouterProcessesOut:
        data = live()
        await data.link.refresh()
        return out(data, data.link.hello)

    @api.post("/restart", summary="Restart the router without refusing a connection")
    async def restart() -> RouterProcessesOut:
        """New workers (and a new parent program: an upgraded portero's) take the listening sockets over before the
        old ones stop accepting; the old ones finish their requests and close their connections cleanly."""
        data = live()
        try:
            hello = await data.link.restart()
        except RouterUnavailable as exc:
            raise Refused(str(exc)) from exc
        message = f"router restarted: pid {hello.pid}, workers {', '.join(str(w['pid']) for w in hello.workers)}"
        await control.supervisor.record(Event("router.restarted", "router", message, at=control.clock()))
        return out(data, hello)

    return api


def _tls_out(data: DataPlane) -> TlsOut:
    tls = data.tls
    shown = [CertificateOut(**dataclasses.asdict(c)) for c in tls.samples()] if tls is not None else []
    return TlsOut(
        enabled=data.table.settings.tls is not None,
        directory_url=(tls.directory or None) if tls is not None else None,
        certificates=shown,
        handshakes=dict(data.link.view.handshakes),
    )


def _tls_routes(api: APIRouter, live: Callable[[], DataPlane]) -> None:
    @api.get("/tls", summary="The router's certificates: where from, until when, when renewed, what failed")
    async def certificates() -> TlsOut:
        return _tls_out(live())

    @api.post("/tls/{host}/renew", summary="Obtain a new certificate for a host now (ACME)")
    async def renew(
        host: Annotated[
            str,
            Path(
                description="A host whose certificate portero obtains (`portero router tls`).",
                max_length=253,
                examples=["portal.example.com"],
            ),
        ],
    ) -> TlsOut:
        """The leading portero orders at once; the certificate served stays until the new one is in."""
        data = live()
        if data.tls is None:
            raise Refused("the router has no TLS (router.tls in the spec)")
        try:
            data.tls.renew(host.lower())
        except LookupError as exc:
            raise NotFound("certificate obtained over ACME for the host", host) from exc
        return _tls_out(data)
