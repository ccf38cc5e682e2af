"""SQLite store (WAL): one file under `.portero/`, safe for readers in other processes.

Calls run in a worker thread so that a slow disk never stalls the event loop that also serves traffic.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from portero.events import Event
from portero.replicas import Replica
from portero.revisions import Revision
from portero.store.base import ServerRecord, ServiceRecord, dropped

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS spec (id INTEGER PRIMARY KEY CHECK (id = 1), source TEXT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY, desired INTEGER NOT NULL, initial INTEGER NOT NULL, revision INTEGER NOT NULL,
    file_digest TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS revisions (
    service TEXT NOT NULL, number INTEGER NOT NULL, digest TEXT NOT NULL, template TEXT NOT NULL,
    created_at REAL NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (service, number));
CREATE TABLE IF NOT EXISTS replicas (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    service TEXT, message TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, started_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS servers (
    service TEXT NOT NULL, address TEXT NOT NULL, weight INTEGER NOT NULL, PRIMARY KEY (service, address));
"""
MAX_EVENTS = 50_000  # the log is bounded; older events are dropped in batches


class SqliteStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(services)")}
        if "file_digest" not in columns:  # a state directory from before deployments existed
            self._db.execute("ALTER TABLE services ADD COLUMN file_digest TEXT NOT NULL DEFAULT ''")

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        return await asyncio.to_thread(locked)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._run(transaction)

    async def close(self) -> None:
        await self._run(lambda db: db.close())

    async def put_spec(self, source: str, spec: dict[str, Any]) -> None:
        body = json.dumps(spec)
        await self._write(
            lambda db: db.execute("INSERT OR REPLACE INTO spec (id, source, body) VALUES (1, ?, ?)", (source, body))
        )

    async def get_spec(self) -> tuple[str, dict[str, Any]] | None:
        row = await self._run(lambda db: db.execute("SELECT source, body FROM spec WHERE id = 1").fetchone())
        return None if row is None else (row[0], json.loads(row[1]))

    async def put_service(self, record: ServiceRecord) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO services (name, desired, initial, revision, file_digest) "
                "VALUES (?, ?, ?, ?, ?)",
                (record.name, record.desired, record.initial, record.revision, record.file_digest),
            )
        )

    async def get_services(self) -> dict[str, ServiceRecord]:
        rows = await self._run(
            lambda db: db.execute("SELECT name, desired, initial, revision, file_digest FROM services").fetchall()
        )
        return {row[0]: ServiceRecord(*row) for row in rows}

    async def delete_service(self, name: str) -> None:
        await self._write(lambda db: db.execute("DELETE FROM services WHERE name = ?", (name,)))

    async def add_revision(self, revision: Revision, keep: int, pinned: frozenset[int] = frozenset()) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    revision.service,
                    revision.number,
                    revision.digest,
                    json.dumps(revision.template),
                    revision.created_at,
                    revision.reason,
                ),
            )
            numbers = [n for (n,) in db.execute("SELECT number FROM revisions WHERE service = ?", (revision.service,))]
            for number in dropped(numbers, keep, pinned):
                db.execute("DELETE FROM revisions WHERE service = ? AND number = ?", (revision.service, number))

        await self._write(work)

    async def get_revisions(self, service: str) -> list[Revision]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT service, number, digest, template, created_at, reason FROM revisions "
                "WHERE service = ? ORDER BY number",
                (service,),
            ).fetchall()
        )
        return [Revision(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    async def save_replicas(self, replicas: list[Replica]) -> None:
        rows = [(replica.id, json.dumps(replica.to_dict())) for replica in replicas]

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM replicas")
            db.executemany("INSERT INTO replicas (id, body) VALUES (?, ?)", rows)

        await self._write(work)

    async def load_replicas(self) -> list[Replica]:
        rows = await self._run(lambda db: db.execute("SELECT body FROM replicas ORDER BY rowid").fetchall())
        return [Replica.from_dict(json.loads(row[0])) for row in rows]

    async def put_server(self, server: ServerRecord) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO servers (service, address, weight) VALUES (?, ?, ?)",
                (server.service, server.address, server.weight),
            )
        )

    async def delete_server(self, service: str, address: str) -> None:
        await self._write(
            lambda db: db.execute("DELETE FROM servers WHERE service = ? AND address = ?", (service, address))
        )

    async def get_servers(self) -> list[ServerRecord]:
        rows = await self._run(lambda db: db.execute("SELECT service, address, weight FROM servers").fetchall())
        return [ServerRecord(*row) for row in rows]

    async def put_deployment(self, service: str, deployment_id: str, started_at: float, body: dict[str, Any]) -> None:
        text = json.dumps(body)
        await self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO deployments (id, service, started_at, body) VALUES (?, ?, ?, ?)",
                (deployment_id, service, started_at, text),
            )
        )

    async def get_deployments(self, service: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query, params = "SELECT body FROM deployments", []
        if service is not None:
            query, params = query + " WHERE service = ?", [service]
        rows = await self._run(
            lambda db: db.execute(query + " ORDER BY started_at DESC LIMIT ?", [*params, limit]).fetchall()
        )
        return [json.loads(row[0]) for row in rows]

    async def append_event(self, event: Event) -> Event:
        def work(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO events (at, kind, subject, service, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                (event.at, event.kind, event.subject, event.service, event.message, json.dumps(event.data)),
            )
            event_id = cursor.lastrowid or 0
            if event_id % 1000 == 0:
                db.execute("DELETE FROM events WHERE id <= ?", (event_id - MAX_EVENTS,))
            return event_id

        event_id = await self._write(work)
        return Event(event.kind, event.subject, event.message, event.service, event.at, event.data, event_id)

    async def get_events(
        self, *, since: float | None = None, service: str | None = None, limit: int = 100
    ) -> list[Event]:
        query = "SELECT id, at, kind, subject, service, message, data FROM events WHERE at >= ?"
        params: list[Any] = [since or 0.0]
        if service is not None:
            query += " AND service = ?"
            params.append(service)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = await self._run(lambda db: db.execute(query, params).fetchall())
        return [Event(r[2], r[3], r[5], r[4], r[1], json.loads(r[6]), r[0]) for r in reversed(rows)]
