"""Where obtained certificates, their keys and the ACME account key are kept, and where pending HTTP-01 challenges
are shared: the state directory (one portero), or Redis (several porteros on one Redis, which all serve what the
leader obtains).

`FileVault`: `<state>/tls/`, owner-only (0700, files 0600, written whole then renamed into place, so a reader never
sees half a key). `RedisVault`: the hash `<prefix>:tls` (fields `account <digest of the directory URL>` and
`cert <host>`), written under the leader's fencing token like every controller's write, so a portero that lost the
lead without knowing it cannot overwrite a newer certificate; the challenges in `<prefix>:tls:challenges`, and each
portero's acknowledgement that its router serves them in `<prefix>:tls:served:<instance>`. Redis holds keys in
the clear: protect it as docs/redis.md says (a password, loopback or a private network).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from portero.store.redis import RedisStore

CHALLENGE_TTL_S = 600  # a challenge left behind by a portero that died mid-order goes by itself


@dataclass(frozen=True)
class Stored:
    """A certificate portero obtained: its chain and key (PEM), and from which ACME directory."""

    host: str
    chain_pem: str
    key_pem: str
    directory: str
    obtained_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "host": self.host,
                "chain": self.chain_pem,
                "key": self.key_pem,
                "directory": self.directory,
                "obtained_at": self.obtained_at,
            }
        )

    @staticmethod
    def from_json(text: str) -> Stored:
        data = json.loads(text)
        return Stored(
            str(data["host"]), str(data["chain"]), str(data["key"]), str(data["directory"]), float(data["obtained_at"])
        )


def directory_digest(directory_url: str) -> str:
    return hashlib.sha256(directory_url.encode()).hexdigest()[:16]


class Vault(Protocol):
    shared: bool  # several porteros read it: challenges need every one's acknowledgement

    async def account(self, directory_url: str) -> str | None:
        """The account key (a JWK as JSON) for this ACME directory."""
        ...

    async def save_account(self, directory_url: str, jwk: str) -> None: ...
    async def certificates(self) -> dict[str, Stored]: ...
    async def save(self, stored: Stored) -> None: ...
    async def challenges(self) -> dict[str, str]: ...
    async def set_challenges(self, challenges: dict[str, str]) -> None: ...
    async def acknowledge(self, member: str, tokens: list[str]) -> None: ...
    async def acknowledged(self) -> dict[str, list[str]]: ...


def write_private(path: Path, data: bytes) -> None:
    """`data` into `path`, owner-only from its first byte, whole or not at all."""
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    for folder in reversed(missing):  # each one owner-only, not only the last (mkdir's `mode` with `parents`)
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


class FileVault:
    shared = False

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "tls"
        self._challenges: dict[str, str] = {}

    def _account_path(self, directory_url: str) -> Path:
        return self.dir / "accounts" / f"{directory_digest(directory_url)}.json"

    async def account(self, directory_url: str) -> str | None:
        path = self._account_path(directory_url)
        if not path.exists():
            return None
        return json.dumps(json.loads(path.read_text())["key"])

    async def save_account(self, directory_url: str, jwk: str) -> None:
        body = json.dumps({"directory": directory_url, "key": json.loads(jwk)})
        write_private(self._account_path(directory_url), body.encode())

    async def certificates(self) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        folder = self.dir / "certs"
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                stored = Stored.from_json(path.read_text())
                found[stored.host] = stored
        return found

    async def save(self, stored: Stored) -> None:
        write_private(self.dir / "certs" / f"{stored.host}.json", stored.to_json().encode())

    async def challenges(self) -> dict[str, str]:
        return dict(self._challenges)

    async def set_challenges(self, challenges: dict[str, str]) -> None:
        self._challenges = dict(challenges)  # only this portero's router answers them: nothing to share

    async def acknowledge(self, member: str, tokens: list[str]) -> None:
        return None

    async def acknowledged(self) -> dict[str, list[str]]:
        return {}


class RedisVault:
    shared = True

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        prefix = store.keys.prefix
        self.key = f"{prefix}:tls"
        self.challenge_key = f"{prefix}:tls:challenges"
        self.served_key = f"{prefix}:tls:served"

    async def _get(self, field: str) -> str | None:
        value: str | None = await self.store.call(self.store.client.hget(self.key, field))
        return value

    async def account(self, directory_url: str) -> str | None:
        body = await self._get(f"account {directory_digest(directory_url)}")
        return None if body is None else json.dumps(json.loads(body)["key"])

    async def save_account(self, directory_url: str, jwk: str) -> None:
        body = json.dumps({"directory": directory_url, "key": json.loads(jwk)})
        await self.store.write([("HSET", self.key, f"account {directory_digest(directory_url)}", body)])

    async def certificates(self) -> dict[str, Stored]:
        rows: dict[str, str] = await self.store.call(self.store.client.hgetall(self.key))
        found = [Stored.from_json(body) for field, body in rows.items() if field.startswith("cert ")]
        return {stored.host: stored for stored in found}

    async def save(self, stored: Stored) -> None:
        await self.store.write([("HSET", self.key, f"cert {stored.host}", stored.to_json())])

    async def challenges(self) -> dict[str, str]:
        rows: dict[str, str] = await self.store.call(self.store.client.hgetall(self.challenge_key))
        return rows

    async def set_challenges(self, challenges: dict[str, str]) -> None:
        commands: list[tuple[str, ...]] = [("DEL", self.challenge_key)]
        if challenges:
            pairs = [item for pair in sorted(challenges.items()) for item in pair]
            commands += [("HSET", self.challenge_key, *pairs), ("EXPIRE", self.challenge_key, str(CHALLENGE_TTL_S))]
        await self.store.write(commands)

    async def acknowledge(self, member: str, tokens: list[str]) -> None:
        body = json.dumps(sorted(tokens))
        await self.store.call(self.store.client.set(f"{self.served_key}:{member}", body, ex=CHALLENGE_TTL_S))

    async def acknowledged(self) -> dict[str, list[str]]:
        client = self.store.client
        keys: list[str] = await self.store.call(client.keys(f"{self.served_key}:*"))  # one per portero: a handful
        if not keys:
            return {}
        bodies: list[str | None] = await self.store.call(client.mget(keys))
        start = len(self.served_key) + 1
        return {key[start:]: list(json.loads(body)) for key, body in zip(keys, bodies, strict=True) if body}
