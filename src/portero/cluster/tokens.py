"""A token made on any portero of a group is accepted by all of them, as a request a follower forwards to the
leader must be: each portero shares its token records (hashes, never a secret) in Redis and takes the others'.

Redis is already trusted with the spec, and so with the commands portero runs; trusting it with token hashes
opens no new way in. A share expires unless refreshed, so a portero that is gone takes its tokens along, and a
revoke on the portero that made the token reaches the others within `SHARE_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict
from typing import Any

from portero.store.base import StoreUnavailable
from portero.store.redis import RedisStore
from portero.tokens import TokenRecord, TokenSet, record_of

log = logging.getLogger(__name__)

SHARE_EVERY_S = 1.0
SHARE_TTL_S = 10.0
MISS_EVERY_S = 0.2  # unknown tokens cannot make this portero hammer Redis


def others(shared: dict[str, list[dict[str, Any]]], member: str) -> list[TokenRecord]:
    """The other porteros' records; a malformed one is skipped (and said), never a reason to refuse the rest."""
    records = []
    for who, items in shared.items():
        if who == member:
            continue
        for item in items:
            try:
                records.append(record_of(item))
            except (ValueError, TypeError) as exc:
                log.warning("a token record shared by %s is refused: %s", who, exc)
    return records


class TokenShare:
    """Publishes this portero's records and takes the others' every `every_s`; with Redis away the last known
    stay. A token unknown here makes the API ask Redis at once (at most every `MISS_EVERY_S`), so a token made on
    another portero a moment ago is not refused for the length of a period."""

    def __init__(self, store: RedisStore, tokens: TokenSet, member: str, *, every_s: float = SHARE_EVERY_S) -> None:
        self.store, self.tokens, self.member, self.every_s = store, tokens, member, every_s
        self._asked = -MISS_EVERY_S
        tokens.on_miss = self.take

    async def run(self) -> None:
        while True:
            try:
                await self.store.share_tokens(self.member, [asdict(r) for r in self.tokens.records], SHARE_TTL_S)
                self.tokens.shared = others(await self.store.shared_tokens(), self.member)
            except StoreUnavailable:
                pass  # the store-unreachable alert says it; tokens known so far keep working
            await asyncio.sleep(self.every_s)

    async def take(self) -> None:
        now = time.monotonic()
        if now - self._asked < MISS_EVERY_S:
            return
        self._asked = now
        with contextlib.suppress(StoreUnavailable):
            self.tokens.shared = others(await self.store.shared_tokens(), self.member)
