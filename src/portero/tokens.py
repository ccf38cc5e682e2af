"""Bearer tokens of the management API: made here, kept hashed in the state directory, checked by the daemon.

`tokens.json` (mode 0600) holds one record per token: id, role, name, creation time and the SHA-256 of the
secret. A token is `prt_` plus 43 characters of `secrets.token_urlsafe(32)`: 256 random bits, so a plain
SHA-256 is enough (a slow KDF guards guessable passwords, not random keys) and a stolen file yields no usable
token. `admin.token` (0600) holds the first admin token in clear, for the CLI on this machine; it is the only
place a secret is kept. `portero token` edits `tokens.json` directly, like `kubeadm token`, under a lock file;
the daemon re-reads it when it changes (`TokenSet`), so a revoke takes effect on the next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

TOKENS_FILE = "tokens.json"
ADMIN_TOKEN_FILE = "admin.token"
LOCK_FILE = "tokens.lock"
PREFIX = "prt_"
ROLES = ("admin", "viewer")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"  # shown in logs: no spaces, quotes or newlines
ID_PATTERN = r"^[0-9a-f]{8}$"
MAX_TOKEN_CHARS = 256

Role = Literal["admin", "viewer"]
log = logging.getLogger(__name__)


class TokenError(Exception):
    """The token file cannot be used, or a token command cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class TokenRecord:
    id: str
    role: Role
    name: str | None
    created_at: str  # RFC 3339, UTC
    sha256: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def find(records: list[TokenRecord], presented: str) -> TokenRecord | None:
    """The record whose hash matches; every record is compared, in constant time, whatever matches first."""
    if len(presented) > MAX_TOKEN_CHARS:
        return None
    wanted = digest(presented)
    found = None
    for record in records:
        if hmac.compare_digest(wanted, record.sha256):
            found = record
    return found


def read(path: Path) -> list[TokenRecord]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [record_of(item) for item in data["tokens"]]
    except FileNotFoundError:
        raise TokenError(f"{path}: no token file (`portero up` creates it at first start)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenError(f"{path}: unreadable token file ({exc}); fix or remove it") from None


def record_of(item: dict[str, Any]) -> TokenRecord:
    """A record from its JSON form (`tokens.json`, or another portero's share in Redis); ValueError or
    TypeError when malformed."""
    record = TokenRecord(**item)
    if (
        record.role not in ROLES
        or not re.fullmatch(ID_PATTERN, record.id)
        or not re.fullmatch(r"[0-9a-f]{64}", record.sha256)
    ):
        raise ValueError(f"token {record.id!r}: bad role, id or hash")
    return record


def write(path: Path, records: list[TokenRecord]) -> None:
    _write_private(path, json.dumps({"tokens": [asdict(r) for r in records]}, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Atomic, and 0600 from its first byte (os.open's mode; umask can only narrow it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # a leftover temporary file from an older run may have had other bits
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_state_dir(state_dir: Path) -> None:
    if not state_dir.is_dir():
        raise TokenError(f"no portero state directory at {state_dir} (`portero up` creates it; or --state-dir)")


def create(state_dir: Path, role: str, name: str | None = None) -> tuple[TokenRecord, str]:
    """A new token of `role`; returns its record and the secret, which is never stored."""
    _check_state_dir(state_dir)
    if role not in ROLES:
        raise TokenError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if name is not None and not re.fullmatch(NAME_PATTERN, name):
        raise TokenError(f"name {name!r}: expected 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    with _locked(state_dir):
        path = state_dir / TOKENS_FILE
        records = read(path) if path.exists() else []
        taken = {r.id for r in records}
        token_id = secrets.token_hex(4)
        while token_id in taken:
            token_id = secrets.token_hex(4)
        secret = new_token()
        created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        record = TokenRecord(token_id, cast(Role, role), name, created, digest(secret))
        write(path, [*records, record])
    return record, secret


def listed(state_dir: Path) -> list[TokenRecord]:
    _check_state_dir(state_dir)
    return read(state_dir / TOKENS_FILE)


def revoke(state_dir: Path, token_id: str) -> TokenRecord:
    _check_state_dir(state_dir)
    with _locked(state_dir):
        path = state_dir / TOKENS_FILE
        records = read(path)
        gone = [r for r in records if r.id == token_id]
        if not gone:
            known = ", ".join(r.id for r in records) or "none"
            raise TokenError(f"no token with id {token_id!r} (known: {known}; see `portero token list`)")
        write(path, [r for r in records if r.id != token_id])
    saved = state_dir / ADMIN_TOKEN_FILE
    if saved.exists() and digest(saved.read_text().strip()) == gone[0].sha256:
        saved.unlink()  # a revoked secret has no reason to stay on disk
    return gone[0]


def ensure_admin(state_dir: Path) -> tuple[TokenRecord, str] | None:
    """At first start (no token file yet): an admin token, saved for the CLI. Returns it when it was made."""
    if (state_dir / TOKENS_FILE).exists():
        return None
    record, secret = create(state_dir, "admin", "initial-admin")
    _write_private(state_dir / ADMIN_TOKEN_FILE, secret + "\n")
    return record, secret


def saved_admin_token(state_dir: Path) -> str | None:
    """The token the CLI sends when PORTERO_TOKEN is not set."""
    try:
        return (state_dir / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def tighten_modes(state_dir: Path) -> list[str]:
    """Token files readable by others are made 0600 again; returns what was fixed, for a warning."""
    fixed = []
    for name in (TOKENS_FILE, ADMIN_TOKEN_FILE, LOCK_FILE):
        path = state_dir / name
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                path.chmod(0o600)
                fixed.append(f"{path} was {mode:04o}")
    return fixed


class TokenSet:
    """The daemon's view of `tokens.json`, read again whenever the file changes (a stat per check).

    A file that cannot be read denies every token (fails closed) until it is fixed; the error is logged once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._records: list[TokenRecord] = []
        self.error: str | None = None
        # The other porteros' records when several share one Redis (cluster/tokens.py): a token made on any of
        # them is accepted by all, as a request forwarded to the leader must be.
        self.shared: list[TokenRecord] = []
        self.on_miss: Callable[[], Awaitable[None]] | None = None  # look for an unknown token among the shared
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = (0, 0, 0)
        if key == self._seen:
            return
        self._seen = key
        try:
            self._records = read(self.path)
            self.error = None
        except TokenError as exc:
            self._records = []
            self.error = str(exc)
            log.error("every token is refused until this is fixed: %s", exc)

    def check(self, presented: str) -> TokenRecord | None:
        self._refresh()
        return find(self._records + self.shared, presented)

    def holds(self, record: TokenRecord) -> bool:
        """Whether a token let in earlier is still valid (a long read is checked again; a revoke ends it)."""
        self._refresh()
        return any(r.sha256 == record.sha256 for r in self._records + self.shared)

    @property
    def records(self) -> list[TokenRecord]:
        self._refresh()
        return list(self._records)
