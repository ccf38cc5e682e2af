"""The owner of the router's certificates: those given as files and those obtained over ACME, what the workers
serve of them, and when each is renewed.

Theory of operation. One loop (`run`) looks every TICK_S (or when woken): it reads the given files again when they
changed on disk, takes the certificates the vault holds (a portero among several takes those the leader obtained,
and the challenges it published), writes each obtained one as a file of its own under `<state>/tls/live/` (key
and chain, owner-only, named by fingerprint), and puts the whole set in the routing table, which pushes it to the
workers as a new snapshot: new connections get the new certificate, open ones keep theirs. The leader (the only
portero, or the holder of the Redis lease) then asks `plan.next_order` which host is due, and orders for it:

    new order (a new key, a CSR)  ->  the HTTP-01 answers into the table, served by every worker (`settle`) and,
    with Redis, acknowledged by every portero  ->  the CA is told to look  ->  finalize  ->  the vault  ->  the table

A failed attempt changes nothing that is served: the certificate the host had keeps serving, an event says why it
failed, and `samples` shows the failures, from which the monitor's `tls-renewal-failed` alert fires. Challenges
are withdrawn after every attempt, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from portero.dataplane.table import RoutingTable
from portero.events import Event
from portero.monitor.snapshot import CertificateSample
from portero.router.snapshot import CertificateEntry
from portero.spec.models import AcmeSettings, CertificateFiles, RouterSettings
from portero.store.base import StaleLeader, StoreUnavailable
from portero.tasks import settle, spawn
from portero.tls import certs, plan
from portero.tls.plan import Holding, Step
from portero.tls.vault import Stored, Vault, write_private

log = logging.getLogger(__name__)
TICK_S = 1.0  # how often the vault (Redis) and the given files are looked at
ACK_TIMEOUT_S = 15.0  # every portero serves a challenge within this, or the CA is told to look anyway
KEEP_LIVE = 2  # files kept per host: the one served and the one before (a worker may still be loading it)

Record = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class Given:
    """A certificate given as files, as last read."""

    files: CertificateFiles
    entry: CertificateEntry | None  # None: it never loaded
    facts: certs.Facts | None
    stamp: tuple[float, int]  # (mtime, size) of its files when read
    error: str = ""


class Plane(Protocol):
    """What the manager needs of the data plane (dataplane/plane.py): the table it sets certificates in, a push,
    and a wait until every worker serves the table."""

    table: RoutingTable

    def push(self) -> None: ...
    async def settle(self) -> bool: ...


class TlsManager:
    def __init__(
        self,
        settings: RouterSettings,
        state_dir: Path,
        vault: Vault,
        plane: Plane,
        record: Record,
        *,
        clock: Callable[[], float] = time.time,
        leading: Callable[[], bool] = lambda: True,
        identity: str = "portero",
        members: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.settings = settings
        self.live_dir = state_dir / "tls" / "live"
        self.vault = vault
        self.plane = plane
        self.record = record
        self.clock = clock
        self.leading = leading
        self.identity = identity
        self.members = members
        self.given: list[Given] = []
        self.holdings: dict[str, Holding] = {}
        self.live: dict[str, tuple[Stored, CertificateEntry]] = {}  # host -> what is served for it
        self.challenges: dict[str, str] = {}  # token -> key authorization, served now
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.configure(settings)

    # -- configuration and state -------------------------------------------------------------------------------

    @property
    def acme(self) -> bool:
        return self.settings.tls is not None and self.settings.tls.acme is not None

    @property
    def directory(self) -> str:
        tls = self.settings.tls
        return tls.acme.directory_url if tls is not None and tls.acme is not None else ""

    def configure(self, settings: RouterSettings) -> None:
        """A new spec: its given files read again, its ACME hosts held (hosts a given certificate serves left out)."""
        self.settings = settings
        files = settings.tls.certificates if settings.tls is not None else ()
        self.given = [self._read(f, next((g for g in self.given if g.files == f), None)) for f in files]
        hosts = [
            h for h in settings.acme_hosts if not any(g.facts and certs.serves(self._names(g), h) for g in self.given)
        ]
        self.holdings = {h: self.holdings.get(h) or Holding(h) for h in hosts}
        self.wake.set()

    def _read(self, files: CertificateFiles, before: Given | None) -> Given:
        paths = [Path(files.cert_file)] + ([Path(files.key_file)] if files.key_file else [])
        try:
            stats = [p.stat() for p in paths]
        except OSError as exc:
            return self._unreadable(files, before, f"{exc.filename}: {exc.strerror}", (0.0, 0))
        stamp = (max(s.st_mtime for s in stats), sum(s.st_size for s in stats))
        if before is not None and before.stamp == stamp:
            return before
        try:
            found = certs.facts(paths[0].read_bytes())
        except (OSError, certs.CertificateError) as exc:
            return self._unreadable(files, before, f"{files.cert_file}: {exc}", stamp)
        names = files.hosts or found.names
        entry = CertificateEntry(
            tuple(n.lower() for n in names), files.cert_file, files.key_file or "", found.fingerprint
        )
        return Given(files, entry, found, stamp)

    def _unreadable(self, files: CertificateFiles, before: Given | None, error: str, stamp: tuple[float, int]) -> Given:
        """A given certificate that cannot be read: the one read before keeps serving."""
        if before is None or before.error != error:
            log.error("certificate %s cannot be read: %s", files.cert_file, error)
        kept = before if before is not None else Given(files, None, None, stamp)
        return replace(kept, stamp=stamp, error=error)

    @staticmethod
    def _names(given: Given) -> tuple[str, ...]:
        return given.entry.names if given.entry is not None else ()

    def entries(self) -> tuple[CertificateEntry, ...]:
        """What the workers serve: the given certificates first (the first is the default), then obtained ones."""
        found = [g.entry for g in self.given if g.entry is not None]
        found += [self.live[h][1] for h in self.holdings if h in self.live]
        return tuple(found)

    def served_files(self, host: str) -> tuple[str, str | None] | None:
        """The files of the certificate the router serves `host` with (the admin API may serve it too)."""
        for entry in self.entries():
            if certs.serves(entry.names, host):
                return entry.cert_file, entry.key_file or None
        return None

    def _publish_table(self) -> bool:
        challenges = tuple(sorted(self.challenges.items()))
        changed = self.plane.table.set_tls(self.entries(), challenges)
        if changed:
            self.plane.push()
        return changed

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Before the router gets its first snapshot: what the vault holds, in the table."""
        with contextlib.suppress(StoreUnavailable):
            await self._take_vault()
        self._publish_table()

    def start(self) -> None:
        self._task = spawn(self.run(), name="tls", eternal=True)

    async def stop(self) -> None:
        if self._task is not None:
            settle(self._task)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def renew(self, host: str) -> None:
        """Order a new certificate for `host` now (it keeps its current one until then)."""
        if host not in self.holdings:
            raise LookupError(f"no certificate of {host!r} is obtained over ACME (router.tls.acme)")
        self.holdings[host] = replace(self.holdings[host], forced=True)
        self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.step()
            except Exception:
                log.exception("TLS pass failed; the next one starts over")
            wait = TICK_S
            if self.acme and self.leading():
                _, at = plan.next_order(
                    list(self.holdings.values()), self.directory, self._acme_settings(), self.clock()
                )
                wait = min(wait, max(at - self.clock(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait)

    async def step(self) -> None:
        self.given = [self._read(g.files, g) for g in self.given]
        try:
            await self._take_vault()
            if self.vault.shared and not self.leading():
                await self._follow_challenges()
        except StoreUnavailable as exc:
            log.debug("TLS: vault unavailable: %s", exc)
        self._publish_table()
        if not self.acme or not self.leading():
            return
        host, _ = plan.next_order(list(self.holdings.values()), self.directory, self._acme_settings(), self.clock())
        if host is not None:
            await self.obtain(host)

    def _acme_settings(self) -> AcmeSettings:
        assert self.settings.tls is not None
        assert self.settings.tls.acme is not None
        return self.settings.tls.acme

    # -- the vault -----------------------------------------------------------------------------------------------

    async def _take_vault(self) -> None:
        """Certificates the vault holds that differ from those served: written as live files, served."""
        if not self.holdings:
            return
        stored = await self.vault.certificates()
        for host in self.holdings:
            found = stored.get(host)
            current = self.live.get(host)
            if found is None or (current is not None and current[0] == found):
                continue
            try:
                self._install(found)
            except (OSError, certs.CertificateError) as exc:
                log.error("stored certificate of %s cannot be used: %s", host, exc)

    def _install(self, stored: Stored) -> certs.Facts:
        """The certificate as a live file of its own (key, then chain), and held as served for its host."""
        found = certs.facts(stored.chain_pem.encode())
        certs.load_key(stored.key_pem.encode())
        path = self.live_dir / f"{stored.host}-{found.fingerprint[:16]}.pem"
        if not path.exists():
            write_private(path, (stored.key_pem + stored.chain_pem).encode())
        self.live[stored.host] = (stored, CertificateEntry((stored.host,), str(path), "", found.fingerprint))
        holding = self.holdings[stored.host]
        self.holdings[stored.host] = replace(holding, facts=found, directory=stored.directory)
        self._prune(stored.host, path)
        return found

    def _prune(self, host: str, keep: Path) -> None:
        older = sorted(
            (p for p in self.live_dir.glob(f"{host}-*.pem") if p != keep), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for path in older[KEEP_LIVE - 1 :]:
            path.unlink(missing_ok=True)

    async def _follow_challenges(self) -> None:
        """Another portero orders: serve the challenges it published, and say so once every worker does."""
        wanted = await self.vault.challenges()
        if wanted == self.challenges:
            return
        self.challenges = wanted
        self._publish_table()
        if await self.plane.settle() and wanted:
            await self.vault.acknowledge(self.identity, sorted(wanted))

    async def _serve_challenges(self, challenges: dict[str, str]) -> None:
        """Every worker (and with Redis every portero's) answers `challenges` before this returns."""
        self.challenges = dict(challenges)
        await self.vault.set_challenges(self.challenges)
        self._publish_table()
        await self.plane.settle()
        if not self.vault.shared or not challenges or self.members is None:
            return
        await self.vault.acknowledge(self.identity, sorted(challenges))
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            members = set(await self.members())
            acked = {m for m, tokens in (await self.vault.acknowledged()).items() if set(challenges) <= set(tokens)}
            if members <= acked:
                return
            await asyncio.sleep(0.1)
        log.warning(
            "TLS: not every portero acknowledged the challenges within %.0f s; asking the CA anyway", ACK_TIMEOUT_S
        )

    # -- ordering ----------------------------------------------------------------------------------------------

    async def obtain(self, host: str) -> None:
        """One attempt at a certificate for `host`; whatever happens, what it serves stays until a new one is in."""
        acme = self._acme_settings()
        before = self.holdings[host]
        self.holdings[host] = before.step(Step.BEGIN)
        renewal = before.facts is not None
        log.info(
            "TLS: %s a certificate for %s from %s", "renewing" if renewal else "obtaining", host, acme.directory_url
        )
        try:
            stored = await self._order(host)
            await self.vault.save(stored)
            found = self._install(stored)
        except (certs.AcmeFailure, certs.CertificateError, StoreUnavailable, StaleLeader, OSError) as exc:
            await self._failed(host, str(exc))
        except Exception as exc:  # a defect: the attempt fails like any other, and the host is not left ordering
            log.exception("TLS: unexpected failure ordering for %s", host)
            await self._failed(host, f"{type(exc).__name__}: {exc}")
        else:
            self.holdings[host] = self.holdings[host].step(Step.SUCCEED)
            self._publish_table()
            await self.plane.settle()
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(found.not_after))
            kind = "tls.renewed" if renewal else "tls.obtained"
            message = f"certificate for {host} from {found.issuer}, serial {found.serial}, valid until {until}"
            data = {"serial": found.serial, "not_after": found.not_after, "fingerprint": found.fingerprint}
            await self.record(Event(kind, host, message, at=self.clock(), data=data))
        finally:
            with contextlib.suppress(StoreUnavailable, StaleLeader):
                await self._serve_challenges({})

    async def _order(self, host: str) -> Stored:
        from portero.tls import acmeclient  # acme, josepy and pyOpenSSL: only a portero that orders loads them

        acme = self._acme_settings()
        jwk = await self.vault.account(acme.directory_url)
        if jwk is None:
            jwk = acmeclient.new_account_key()
            await self.vault.save_account(acme.directory_url, jwk)
        client = await asyncio.to_thread(acmeclient.connect, acme.directory_url, jwk, acme.email, acme.ca_file)
        order = await asyncio.to_thread(acmeclient.begin, client, host, acme.key_type)
        if order.pending:
            await self._serve_challenges({p.token: p.key_authorization for p in order.pending})
            await asyncio.to_thread(acmeclient.answer, order)
        chain = await asyncio.to_thread(acmeclient.finish, order, acme.timeout_s)
        found = certs.facts(chain.encode())
        if not certs.serves(found.names, host):
            raise certs.CertificateError(f"the CA issued a certificate for {', '.join(found.names)}, not {host}")
        return Stored(host, chain, order.key_pem.decode(), acme.directory_url, self.clock())

    async def _failed(self, host: str, error: str) -> None:
        now = self.clock()
        holding = self.holdings[host].step(Step.FAIL, now, error)
        self.holdings[host] = holding
        wait = plan.retry_delay(holding.failures, self._acme_settings())
        if holding.facts is not None:
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holding.facts.not_after))
            kept = f"the certificate valid until {until} keeps serving"
        else:
            kept = "the host has no certificate yet"
        message = f"certificate for {host} not obtained: {error}; {kept}; next attempt in {wait:.0f} s"
        log.error("TLS: %s", message)
        data = {"error": error, "failures": holding.failures}
        await self.record(Event("tls.failed", host, message, at=now, data=data))

    # -- what it shows -----------------------------------------------------------------------------------------

    def samples(self) -> list[CertificateSample]:
        """Every certificate served or wanted, for the monitor, `/metrics`, the API and the dashboard."""
        shown: list[CertificateSample] = []
        for given in self.given:
            names = self._names(given) or given.files.hosts
            facts = given.facts
            shown.append(
                CertificateSample(
                    host=names[0] if names else given.files.cert_file,
                    names=tuple(names),
                    source="file",
                    state="failing" if given.error else "valid",
                    not_before=facts.not_before if facts else None,
                    not_after=facts.not_after if facts else None,
                    renew_at=None,
                    serial=facts.serial if facts else None,
                    issuer=facts.issuer if facts else None,
                    failures=1 if given.error else 0,
                    error=given.error or None,
                    next_attempt_at=None,
                )
            )
        settings = self._acme_settings() if self.acme else None
        for holding in self.holdings.values():
            facts = holding.facts
            at = plan.due_at(holding, self.directory, settings) if settings is not None and self.leading() else None
            shown.append(
                CertificateSample(
                    host=holding.host,
                    names=facts.names if facts else (holding.host,),
                    source="acme",
                    state=_state(holding, self.clock()),
                    not_before=facts.not_before if facts else None,
                    not_after=facts.not_after if facts else None,
                    renew_at=facts.renew_at(plan.RENEW_AT) if facts else None,
                    serial=facts.serial if facts else None,
                    issuer=facts.issuer if facts else None,
                    failures=holding.failures,
                    error=holding.error or None,
                    next_attempt_at=at if at is not None and at != float("inf") else None,
                )
            )
        return shown


def _state(holding: Holding, now: float) -> str:
    """For a person: missing, obtaining, renewing, failing, valid or expired."""
    if holding.attempt is plan.Attempt.ORDERING:
        return "renewing" if holding.facts is not None else "obtaining"
    if holding.attempt is plan.Attempt.FAILED:
        return "failing"
    if holding.facts is None:
        return "missing"
    return "expired" if holding.facts.not_after <= now else "valid"
