"""A token made on any portero of a group is accepted by all of them, as a request a follower forwards to the
leader must be: each portero shares its token records (hashes, never a secret) in Redis and takes the others'.

Redis is already trusted with the spec, and so with the commands portero runs; trusting it with token hashes
opens no new way in. A share expires unless refreshed, so a portero that is gone takes its tokens along, and a
revoke on the portero that made the token reaches the others within `SHARE_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from portero.store.base import StoreUnavailable
from portero.store.redis import RedisStore
from portero.tokens import TokenRecord, TokenSet, record_of

log = logging.getLogger(__name__)

SHARE_EVERY_S = 1.0
SHARE_TTL_S = 10.0


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


async def share(store: RedisStore, tokens: TokenSet, member: str, every_s: float = SHARE_EVERY_S) -> None:
    """Publish this portero's records and take the others', every `every_s`; with Redis away the last known stay."""
    while True:
        try:
            await store.share_tokens(member, [asdict(r) for r in tokens.records], SHARE_TTL_S)
            tokens.shared = others(await store.shared_tokens(), member)
        except StoreUnavailable:
            pass  # the store-unreachable alert says it; tokens known so far keep working
        await asyncio.sleep(every_s)
