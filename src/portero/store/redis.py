"""Redis store: the state several porteros share (docs/redis.md has the keys and the channel).

Theory of operation: every write is one Lua script call, so a reader sees it whole or not at all, exactly as a
SQLite transaction. A write made by a controller carries the fencing token its portero got with the leader
lease (`fence`); the script compares it with the current epoch (`<prefix>:leader:epoch`, INCRed at each
acquisition) inside the same atomic call, so a portero that lost the lease without knowing it (paused, cut
off) can never overwrite what the new leader decided. Writes that change what routers route (services,
replicas, registered servers) publish on `<prefix>:changes` from the same script: a message is never sent for a
write that did not happen, and the others resync in full on (re)subscribe, so a missed message costs nothing.

Redis being away is classified once, here: `StoreUnavailable`. Events are the one write that is buffered
(bounded, in order) and flushed when Redis answers again; every other write fails loudly and its caller
retries (the supervisor's next pass) or answers 503 (the API).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from portero.events import Event
from portero.replicas import Replica
from portero.revisions import Revision
from portero.store.base import ServerRecord, ServiceRecord, StaleLeader, StoreUnavailable, dropped

log = logging.getLogger(__name__)
MAX_EVENTS = 50_000  # as SQLite: the log is bounded, older events are dropped in batches
PENDING_EVENTS = 10_000  # events kept in memory while Redis is away
PAGE = 500  # events read per round trip when filtering newest first

WRITE = """
-- KEYS[1] epoch key; ARGV[1] fencing token or ''; ARGV[2] commands (JSON list of string lists);
-- ARGV[3] channel; ARGV[4] message to publish or ''
if ARGV[1] ~= '' then
  local epoch = redis.call('GET', KEYS[1])
  if epoch ~= ARGV[1] then
    return redis.error_reply('STALE fencing token ' .. ARGV[1] .. ', current ' .. tostring(epoch))
  end
end
for _, command in ipairs(cjson.decode(ARGV[2])) do
  redis.call(unpack(command))
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
"""

# Once per event: a call that timed out may still run when Redis comes back (its bytes were in Redis's socket while
# it was frozen), and the event, kept and sent again, would be appended twice. KEYS[3] remembers an event's id by
# its digest for an hour.
APPEND_EVENT = """
-- KEYS[1] events zset, KEYS[2] sequence, KEYS[3] the event's digest; ARGV[1] event JSON; ARGV[2] how many to keep
local seen = redis.call('GET', KEYS[3])
if seen then
  return tonumber(seen)
end
local id = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], id, id .. ' ' .. ARGV[1])
redis.call('SET', KEYS[3], id, 'EX', 3600)
if id % 1000 == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', id - tonumber(ARGV[2]))
end
return id
"""


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.spec = f"{prefix}:spec"
        self.services = f"{prefix}:services"
        self.replicas = f"{prefix}:replicas"
        self.traffic = f"{prefix}:traffic"
        self.servers = f"{prefix}:servers"
        self.deployments = f"{prefix}:deployments"
        self.deployments_order = f"{prefix}:deployments:by-start"
        self.events = f"{prefix}:events"
        self.events_seq = f"{prefix}:events:seq"
        self.lease = f"{prefix}:leader"
        self.epoch = f"{prefix}:leader:epoch"
        self.members = f"{prefix}:members"
        self.tokens = f"{prefix}:tokens"
        self.changes = f"{prefix}:changes"

    def revisions(self, service: str) -> str:
        return f"{self.prefix}:revisions:{service}"


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A client that fails fast: one attempt per call, bounded by `timeout_s`; callers decide about retrying."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "portero", timeout_s: float = 1.0) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.client = connect(url, timeout_s)
        self.fence: int | None = None  # the leader's token: its writes are refused once another portero leads
        self.up = True  # the last call's outcome, for the monitor's `portero_store_up`
        self.last_error = ""
        self.on_stale: Callable[[], None] = lambda: None  # a fenced write was refused: leadership is over
        self.origin = ""  # who published a change (the portero's instance id): it ignores its own messages
        self._write_script = self.client.register_script(WRITE)
        self._event_script = self.client.register_script(APPEND_EVENT)
        self._pending: deque[Event] = deque(maxlen=PENDING_EVENTS)

    async def call(self, awaitable: Awaitable[Any]) -> Any:  # redis-py's own types are too loose to help
        try:
            result = await awaitable
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.up, self.last_error = False, str(exc) or type(exc).__name__
            raise StoreUnavailable(f"Redis at {self._where()} does not answer: {self.last_error}") from exc
        except ResponseError as exc:
            self.up = True
            if str(exc).startswith("STALE"):
                self.on_stale()
                raise StaleLeader(f"refused by Redis: {exc}; another portero leads now") from exc
            raise
        self.up = True
        return result

    def _where(self) -> str:
        return self.url.split("@")[-1]  # never a password in a message

    async def ping(self) -> bool:
        try:
            await self.call(self.client.ping())
        except StoreUnavailable:
            return False
        return True

    async def _write(self, commands: Sequence[Sequence[str]], change: dict[str, Any] | None = None) -> None:
        fence = "" if self.fence is None else str(self.fence)
        message = json.dumps({**change, "origin": self.origin}) if change is not None else ""
        args = [fence, json.dumps([list(c) for c in commands]), self.keys.changes, message]
        await self.call(self._write_script(keys=[self.keys.epoch], args=args))

    async def write(self, commands: Sequence[Sequence[str]]) -> None:
        """Commands of another part of portero (tls/vault.py), in one atomic call under the leader's fencing token."""
        await self._write(commands)

    async def publish(self, change: dict[str, Any]) -> None:
        await self.call(self.client.publish(self.keys.changes, json.dumps({**change, "origin": self.origin})))

    async def close(self) -> None:
        await self.client.aclose()

    # -- spec and services ----------------------------------------------------------------------------------------

    async def put_spec(self, source: str, spec: dict[str, Any]) -> None:
        await self._write([("HSET", self.keys.spec, "source", source, "body", json.dumps(spec))], {"kind": "state"})

    async def get_spec(self) -> tuple[str, dict[str, Any]] | None:
        row: dict[str, str] = await self.call(self.client.hgetall(self.keys.spec))
        return None if not row else (row["source"], json.loads(row["body"]))

    async def put_service(self, record: ServiceRecord) -> None:
        body = json.dumps([record.desired, record.initial, record.revision, record.file_digest])
        await self._write([("HSET", self.keys.services, record.name, body)], {"kind": "state"})

    async def get_services(self) -> dict[str, ServiceRecord]:
        rows: dict[str, str] = await self.call(self.client.hgetall(self.keys.services))
        return {name: ServiceRecord(name, *json.loads(body)) for name, body in rows.items()}

    async def delete_service(self, name: str) -> None:
        await self._write([("HDEL", self.keys.services, name)], {"kind": "state"})

    # -- revisions ------------------------------------------------------------------------------------------------

    async def add_revision(self, revision: Revision, keep: int, pinned: frozenset[int] = frozenset()) -> None:
        key = self.keys.revisions(revision.service)
        numbers: list[str] = await self.call(self.client.hkeys(key))
        gone = dropped([int(n) for n in numbers] + [revision.number], keep, pinned)
        body = json.dumps([revision.digest, revision.template, revision.created_at, revision.reason])
        commands: list[tuple[str, ...]] = [("HSET", key, str(revision.number), body)]
        if gone:
            commands.append(("HDEL", key, *(str(n) for n in gone)))
        await self._write(commands)

    async def get_revisions(self, service: str) -> list[Revision]:
        rows: dict[str, str] = await self.call(self.client.hgetall(self.keys.revisions(service)))
        revisions = [Revision(service, int(n), *json.loads(body)) for n, body in rows.items()]
        return sorted(revisions, key=lambda r: r.number)

    # -- replicas -------------------------------------------------------------------------------------------------

    async def save_replicas(self, replicas: list[Replica]) -> None:
        body = json.dumps([replica.to_dict() for replica in replicas])
        await self._write([("SET", self.keys.replicas, body)], {"kind": "state"})

    async def load_replicas(self) -> list[Replica]:
        body: str | None = await self.call(self.client.get(self.keys.replicas))
        return [Replica.from_dict(item) for item in json.loads(body)] if body else []

    async def put_traffic(self, traffic: dict[str, dict[int, float]]) -> None:
        """The split of each service's requests between revisions while a deployment moves it (Redis only:
        with one portero it never leaves memory)."""
        body = json.dumps({service: {str(k): v for k, v in split.items()} for service, split in traffic.items()})
        await self._write([("SET", self.keys.traffic, body)], {"kind": "state"})

    async def get_traffic(self) -> dict[str, dict[int, float]]:
        body: str | None = await self.call(self.client.get(self.keys.traffic))
        data: dict[str, dict[str, float]] = json.loads(body) if body else {}
        return {service: {int(k): v for k, v in split.items()} for service, split in data.items()}

    # -- API tokens of the porteros in the group (hashes, never a secret: cluster/tokens.py) ---------------------

    async def share_tokens(self, member: str, records: list[dict[str, Any]], ttl_s: float) -> None:
        """This portero's token records, kept while it refreshes them: a portero gone takes its tokens along."""
        await self.call(self.client.set(f"{self.keys.tokens}:{member}", json.dumps(records), px=int(ttl_s * 1000)))

    async def shared_tokens(self) -> dict[str, list[dict[str, Any]]]:
        keys: list[str] = await self.call(self.client.keys(f"{self.keys.tokens}:*"))  # one per portero: KEYS is fine
        if not keys:
            return {}
        bodies: list[str | None] = await self.call(self.client.mget(keys))
        start = len(self.keys.tokens) + 1
        return {key[start:]: json.loads(body) for key, body in zip(keys, bodies, strict=True) if body}

    # -- servers registered by hand -------------------------------------------------------------------------------

    async def put_server(self, server: ServerRecord) -> None:
        change = {"kind": "server", "op": "put", "service": server.service, "address": server.address}
        field = f"{server.service} {server.address}"
        await self._write([("HSET", self.keys.servers, field, str(server.weight))], {**change, "weight": server.weight})

    async def delete_server(self, service: str, address: str) -> None:
        change = {"kind": "server", "op": "delete", "service": service, "address": address}
        await self._write([("HDEL", self.keys.servers, f"{service} {address}")], change)

    async def get_servers(self) -> list[ServerRecord]:
        rows: dict[str, str] = await self.call(self.client.hgetall(self.keys.servers))
        servers = []
        for field, weight in rows.items():
            service, address = field.split(" ", 1)
            servers.append(ServerRecord(service, address, int(weight)))
        return servers

    # -- deployments ----------------------------------------------------------------------------------------------

    async def put_deployment(self, service: str, deployment_id: str, started_at: float, body: dict[str, Any]) -> None:
        text = json.dumps({"service": service, "body": body})
        await self._write(
            [
                ("HSET", self.keys.deployments, deployment_id, text),
                ("ZADD", self.keys.deployments_order, repr(started_at), deployment_id),
            ]
        )

    async def get_deployments(self, service: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        start = 0
        while len(found) < limit:
            ids: list[str] = await self.call(
                self.client.zrevrange(self.keys.deployments_order, start, start + PAGE - 1)
            )
            if not ids:
                break
            start += PAGE
            bodies: list[str | None] = await self.call(self.client.hmget(self.keys.deployments, ids))
            for text in bodies:
                if text is None:
                    continue
                row = json.loads(text)
                if service is None or row["service"] == service:
                    found.append(row["body"])
        return found[:limit]

    # -- events ---------------------------------------------------------------------------------------------------

    async def append_event(self, event: Event) -> Event:
        """Appended, or kept in memory (in order, bounded) while Redis is away and appended once it answers."""
        try:
            await self.flush_events()
            return await self._append(event)
        except StoreUnavailable:
            if len(self._pending) == self._pending.maxlen:
                log.warning("Redis away for long: the oldest unsaved event is dropped (%d kept)", PENDING_EVENTS)
            self._pending.append(event)
            return event

    async def flush_events(self) -> int:
        """Events kept while Redis was away, appended now in their order; how many."""
        flushed = 0
        while self._pending:
            await self._append(self._pending[0])
            self._pending.popleft()
            flushed += 1
        return flushed

    @property
    def pending_events(self) -> int:
        return len(self._pending)

    async def _append(self, event: Event) -> Event:
        body = json.dumps([event.at, event.kind, event.subject, event.service, event.message, event.data])
        digest = f"{self.keys.events}:once:{hashlib.sha256(body.encode()).hexdigest()[:32]}"
        script = self._event_script(keys=[self.keys.events, self.keys.events_seq, digest], args=[body, MAX_EVENTS])
        event_id = int(await self.call(script))
        return Event(event.kind, event.subject, event.message, event.service, event.at, event.data, event_id)

    async def get_events(
        self, *, since: float | None = None, service: str | None = None, limit: int = 100
    ) -> list[Event]:
        """Newest first from Redis, page by page, until `limit` match or the events are older than `since`."""
        found: list[Event] = []
        start = 0
        while len(found) < limit:
            members: list[str] = await self.call(self.client.zrevrange(self.keys.events, start, start + PAGE - 1))
            if not members:
                break
            start += PAGE
            for member in members:
                head, body = member.split(" ", 1)
                at, kind, subject, owner, message, data = json.loads(body)
                if since is not None and at < since:
                    continue  # ids follow append order, not `at`: an older one may still come after a newer one
                if service is None or owner == service:
                    found.append(Event(kind, subject, message, owner, at, data, int(head)))
                    if len(found) == limit:
                        break
        return list(reversed(found))
