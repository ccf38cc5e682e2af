"""A real management app (create_app over a real control plane, store, runtime, data plane and autoscaler) with an
admin and a viewer token, served in-process through httpx's ASGI transport. Nothing is started: no replica
runs, no port is taken; the routes answer from the real objects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI

from portero import tokens
from portero.api.app import create_app
from portero.autoscale.loop import Autoscaler
from portero.daemon import assemble
from portero.dataplane.link import RouterLink
from portero.monitor.monitor import Monitor
from portero.runtimes.process import ProcessRuntime
from portero.spec.loader import parse_spec
from portero.store.sqlite import SqliteStore

SPEC = """
services:
  web:
    command: ["python3", "-m", "http.server", "${PORT}"]
    replicas: {initial: 1, min: 0, max: 2}
monitoring: {enabled: false}
"""


@dataclass
class ApiApp:
    app: FastAPI
    state_dir: Path
    admin: str
    viewer: str
    shutdowns: list[bool] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9900", headers=headers)


@asynccontextmanager
async def api_app(tmp: Path, spec_text: str = SPEC) -> AsyncIterator[ApiApp]:
    state_dir = tmp / "state"
    state_dir.mkdir()
    made = tokens.ensure_admin(state_dir)
    assert made is not None
    _, viewer = tokens.create(state_dir, "viewer", "test-viewer")
    spec = parse_spec(spec_text)
    store = SqliteStore(state_dir / "state.db")
    control, plane = assemble(spec, tmp, store, ProcessRuntime(state_dir), RouterLink(state_dir))  # never opened
    assert plane is not None
    monitor = Monitor(control, plane, state_dir, spec.admin.url)
    shutdowns: list[bool] = []
    app = create_app(
        control,
        lambda **_: shutdowns.append(True),
        plane,
        monitor,
        Autoscaler(control, plane, monitor),
        tokens=tokens.TokenSet(state_dir / tokens.TOKENS_FILE),
    )
    try:
        yield ApiApp(app, state_dir, made[1], viewer, shutdowns)
    finally:
        await store.close()
