"""HTTPS for the admin API (`admin.tls`): its own certificate files, or the certificate the router serves for one
host (given or obtained over ACME), followed as it is renewed.

Theory of operation. uvicorn serves the API on one `ssl.SSLContext` (`front`); its `sni_callback` runs at every
handshake, before the certificate is sent, and moves the connection to the context of the newest certificate
(`AdminCertificate.current`): a renewal or a new file reaches the next connection, and open connections keep theirs,
as in the router. The files are looked at once a second at most. Until the router holds a certificate for
`router_host`, the API answers with a self-signed stand-in (`<state>/tls/admin-standin.pem`), which the CLI on this
machine trusts through `admin.json` (`ca`) until the real one is there.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from portero.spec.models import AdminTls
from portero.tls import certs, contexts
from portero.tls.vault import write_private

if TYPE_CHECKING:
    from portero.tls.manager import TlsManager

log = logging.getLogger(__name__)
LOOK_EVERY_S = 1.0


@dataclass(frozen=True)
class Source:
    cert_file: str
    key_file: str | None
    stamp: tuple[float, int]


class AdminCertificate:
    def __init__(self, settings: AdminTls, state_dir: Path, manager: TlsManager | None) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.manager = manager
        self.standin = state_dir / "tls" / "admin-standin.pem"
        self.source: Source | None = None
        self.context: ssl.SSLContext | None = None
        self.looked = 0.0
        self.front = self._load(self._wanted())
        self.front.sni_callback = self._on_hello

    @property
    def trust_files(self) -> list[str]:
        """What the CLI on this machine trusts beside the system's roots: `ca_file`, and the stand-in while the
        router's certificate is not there yet (it is in the files the CLI reads, so it cannot be faked to it)."""
        found = [self.settings.ca_file] if self.settings.ca_file is not None else []
        return found + ([str(self.standin)] if self.settings.router_host is not None else [])

    def _wanted(self) -> tuple[str, str | None]:
        if self.settings.cert_file is not None:
            return self.settings.cert_file, self.settings.key_file
        host = self.settings.router_host
        assert host is not None
        if self.manager is not None:
            served = self.manager.served_files(host)
            if served is not None:
                return served
        if not self.standin.exists():
            key = certs.new_key("ecdsa-p256")
            pem = certs.key_pem(key) + certs.self_signed([host, "localhost", "127.0.0.1"], key)
            write_private(self.standin, pem)
        return str(self.standin), None

    def _load(self, files: tuple[str, str | None]) -> ssl.SSLContext:
        cert_file, key_file = files
        paths = [Path(cert_file)] + ([Path(key_file)] if key_file else [])
        stats = [p.stat() for p in paths]
        stamp = (max(s.st_mtime for s in stats), sum(s.st_size for s in stats))
        if self.context is not None and self.source == Source(cert_file, key_file, stamp):
            return self.context
        context = contexts.server_context(cert_file, key_file)
        if self.source is not None:
            log.info("admin API: serving the certificate in %s to new connections", cert_file)
        self.source, self.context = Source(cert_file, key_file, stamp), context
        return context

    def current(self) -> ssl.SSLContext:
        """The context of the newest certificate (the one loaded last if its files cannot be read now)."""
        now = time.monotonic()
        if now - self.looked >= LOOK_EVERY_S or self.context is None:
            self.looked = now
            try:
                return self._load(self._wanted())
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error("admin API: certificate cannot be loaded, the one loaded before serves on: %s", exc)
        assert self.context is not None
        return self.context

    def _on_hello(self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, context: ssl.SSLContext) -> None:
        chosen = self.current()
        if chosen is not context:
            connection.context = chosen
