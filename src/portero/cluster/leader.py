"""The leader election's shell: the Redis calls (SET NX PX with an INCRed fencing token, a compare-and-extend
renewal, a compare-and-delete release), fed to `lease`, whose commands it carries out through two hooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from portero.cluster import lease as decide
from portero.cluster.lease import Follow, Lead, Lease, Role, Timing
from portero.store.base import StoreUnavailable
from portero.store.redis import RedisStore

log = logging.getLogger(__name__)

ACQUIRE = """
-- KEYS[1] lease, KEYS[2] epoch; ARGV[1] who (id and admin URL), ARGV[2] lease in ms, ARGV[3] the highest token
-- this portero has seen: a Redis that came back empty must not hand out an old token again
local mine = ARGV[1] .. ' '
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #mine) == mine then
  -- this portero's own lease, from a call whose answer it never got (Redis frozen, the call timed out, and
  -- Redis ran it when it woke): nobody else can have taken it, and its token is the epoch
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(string.sub(current, #mine + 1)), current}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[2], ARGV[3])
  end
  local token = redis.call('INCR', KEYS[2])
  local value = ARGV[1] .. ' ' .. token
  redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
  return {1, token, value}
end
return {0, 0, redis.call('GET', KEYS[1]) or ''}
"""

RENEW = """
-- KEYS[1] lease; ARGV[1] the value this leader set; ARGV[2] lease in ms
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, current}
end
return {0, current or ''}
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Hook = Callable[[int], Awaitable[None]]


def ensure_not_cancelled() -> None:
    """End the current task if it was asked to: a cancellation that lands inside a Redis call can be swallowed
    there (seen with redis-py 8 on Python 3.11: the call returns normally), and a loop must not outlive it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def describe(holder: str | None) -> dict[str, str | int | None]:
    """The lease's value (`<id> <admin url> <token>`) as fields."""
    parts = (holder or "").split(" ")
    if len(parts) != 3:
        return {"id": None, "url": None, "token": None}
    return {"id": parts[0], "url": parts[1], "token": int(parts[2]) if parts[2].isdigit() else None}


class Election:
    def __init__(
        self,
        store: RedisStore,
        identity: str,
        url: str,
        timing: Timing,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.identity = identity
        self.url = url
        self.timing = timing
        self.clock = clock
        self.lease = Lease()
        self.on_lead: list[Hook] = []  # called with the fencing token; an exception there gives the lease back
        self.on_follow: list[Callable[[str], Awaitable[None]]] = []
        self.changed = asyncio.Event()  # set at every change of role (tests and the API wait on it)
        self._wake = asyncio.Event()
        client = store.client
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    @property
    def leading(self) -> bool:
        return self.lease.role is Role.LEADER

    @property
    def leader(self) -> dict[str, str | int | None]:
        return describe(self.lease.holder)

    async def run(self) -> None:
        while True:
            await self.step()
            ensure_not_cancelled()
            delay = max(decide.wake_at(self.lease) - self.clock(), 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            ensure_not_cancelled()
            self._wake.clear()

    async def step(self) -> None:
        """One look at the lease: expire it, and take or renew it when due."""
        await self._carry(*decide.expire(self.lease, self.clock()))
        if self.clock() >= self.lease.next_try_at:
            sent = self.clock()
            outcome = await self._call(decide.attempt(self.lease))
            await self._carry(*decide.settle(self.lease, outcome, sent, self.clock(), self.timing))
            if self.lease.reachable:
                with contextlib.suppress(StoreUnavailable):
                    await self._present()
                    await self.store.flush_events()

    async def _call(self, what: str) -> decide.Outcome:
        lease_ms = str(int(self.timing.lease_s * 1000))
        keys = [self.store.keys.lease, self.store.keys.epoch]
        try:
            if what == "acquire":
                seen = max(self.lease.token or 0, int(self.leader["token"] or 0))
                ok, token, holder = await self.store.call(
                    self._acquire(keys=keys, args=[f"{self.identity} {self.url}", lease_ms, str(seen)])
                )
                return decide.Acquired(int(token), holder) if ok else decide.HeldByOther(holder or None)
            ok, holder = await self.store.call(self._renew(keys=keys[:1], args=[self.lease.holder or "", lease_ms]))
            return decide.Renewed() if ok else decide.HeldByOther(holder or None)
        except StoreUnavailable as exc:
            return decide.Unreachable(str(exc))

    async def _carry(self, lease: Lease, commands: list[decide.Command]) -> None:
        self.lease = lease
        for command in commands:
            self.changed.set()
            if isinstance(command, Lead):
                log.warning("this portero leads now (fencing token %d): controllers start", command.token)
                try:
                    for hook in self.on_lead:
                        await hook(command.token)
                except Exception as exc:
                    log.exception("taking the controllers failed; giving the lease back")
                    await self.step_down(f"taking over failed: {exc}")
            elif isinstance(command, Follow):
                log.warning("this portero follows now: %s; controllers paused", command.reason)
                for follow in self.on_follow:
                    await follow(command.reason)

    async def step_down(self, reason: str) -> None:
        """Leadership ends now (a refused fenced write, a failed takeover, shutdown): pause, then give the lease
        back so that another portero need not wait for it to expire."""
        holder = self.lease.holder
        was_leading = self.leading
        await self._carry(*decide.demote(self.lease, reason, now=self.clock(), timing=self.timing))
        if was_leading and holder:
            with contextlib.suppress(StoreUnavailable):
                await self.store.call(self._release(keys=[self.store.keys.lease], args=[holder]))
        self._wake.set()

    async def _present(self) -> None:
        """This portero is alive (a key that expires with the lease): `members()` counts it."""
        key = f"{self.store.keys.members}:{self.identity}"
        await self.store.call(self.store.client.set(key, self.url, px=int(self.timing.lease_s * 1000)))

    async def absent(self) -> None:
        await self.store.call(self.store.client.delete(f"{self.store.keys.members}:{self.identity}"))

    async def members(self) -> dict[str, str]:
        """The porteros alive on this Redis (this one included): instance id -> admin URL."""
        client = self.store.client
        keys = await self.store.call(client.keys(f"{self.store.keys.members}:*"))  # a handful: KEYS is fine
        urls = await self.store.call(client.mget(keys)) if keys else []
        return {key.rsplit(":", 1)[1]: url for key, url in zip(keys, urls, strict=True) if url is not None}
