"""The router's TLS contexts: one per certificate, the one a connection gets picked by the name its client asks for
(SNI), in a router worker.

Theory of operation. A snapshot names every certificate by its files and fingerprint (router/snapshot.py). A worker
turns them into a `ContextBook`: one `ssl.SSLContext` per certificate, and an index of the names each serves. New
connections are wrapped with the book's `front` context, whose `sni_callback` moves the handshake to the context of
the name asked for (exact name first, then `*.parent`); a client that asks for no name, or for one no certificate
serves, gets the first certificate, as nginx's default server does. A new snapshot makes a new book that reuses the
contexts of unchanged entries (no file is read again); the router swaps it in for new connections, and open
connections keep the contexts they were made with (each OpenSSL connection holds its own reference): a renewal
never touches a connection in progress. A certificate that cannot be loaded is reported and its names keep what
the previous book served for them.

TLS 1.2 and 1.3 only; for 1.2 Mozilla's "intermediate" ciphers (ECDHE with AES-GCM or ChaCha20-Poly1305: forward
secrecy and AEAD only), for 1.3 OpenSSL's suites (all AEAD). ALPN offers HTTP/1.1, the one protocol the router
speaks. Plain `ssl` objects: this module is imported by the compiled router but stays Python.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from portero.router.snapshot import CertificateEntry
from portero.spec.models import TlsSettings

# Mozilla's intermediate configuration (v5.7) for TLS 1.2; TLS 1.3 suites are not set by this string.
CIPHERS_TLS12 = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

Key = tuple[str, str, str, str, bool]  # (fingerprint, cert file, key file, min version, session tickets)


def server_context(
    cert_file: str, key_file: str | None, *, min_version: str = "1.2", tickets: bool = True
) -> ssl.SSLContext:
    """A server context for one certificate; `ssl.SSLError` or `OSError` if its files do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[min_version]
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(CIPHERS_TLS12)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not tickets:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0  # TLS 1.3 resumes by tickets alone: none issued, none resumed
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file or None)
    return context


@dataclass
class ContextBook:
    """The contexts of one set of certificates, and the names they serve."""

    contexts: dict[Key, ssl.SSLContext] = field(default_factory=dict)
    exact: dict[str, ssl.SSLContext] = field(default_factory=dict)
    wildcard: dict[str, ssl.SSLContext] = field(default_factory=dict)  # ".example.com" -> context
    front: ssl.SSLContext | None = None  # what new connections are wrapped with
    errors: list[str] = field(default_factory=list)  # certificates that did not load, and why

    def pick(self, name: str | None) -> ssl.SSLContext | None:
        if not name:
            return None
        name = name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None:
            dot = name.find(".")
            if dot > 0:
                found = self.wildcard.get(name[dot:])
        return found

    def _on_sni(self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, context: ssl.SSLContext) -> None:
        chosen = self.pick(name)
        if chosen is not None and chosen is not context:
            connection.context = chosen


def build(
    settings: TlsSettings | None, entries: tuple[CertificateEntry, ...], previous: ContextBook | None = None
) -> ContextBook:
    """The book for `entries`: contexts of entries `previous` had already are reused, the others loaded now."""
    book = ContextBook()
    if settings is None:
        return book
    old = previous.contexts if previous is not None else {}
    for entry in entries:
        key: Key = (entry.fingerprint, entry.cert_file, entry.key_file, settings.min_version, settings.session_tickets)
        context = old.get(key) or book.contexts.get(key)
        if context is None:
            try:
                context = server_context(
                    entry.cert_file,
                    entry.key_file,
                    min_version=settings.min_version,
                    tickets=settings.session_tickets,
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                book.errors.append(f"certificate {entry.cert_file} for {', '.join(entry.names)}: {exc}")
                _keep(book, entry, previous)
                continue
        book.contexts[key] = context
        for name in entry.names:
            _index(book, name, context)
    first = next(iter(book.contexts.values()), None)
    if first is None and book.exact:
        first = next(iter(book.exact.values()))
    if first is not None:
        first.sni_callback = book._on_sni
    book.front = first
    return book


def _keep(book: ContextBook, entry: CertificateEntry, previous: ContextBook | None) -> None:
    """A certificate that did not load: its names keep what the previous book served them."""
    if previous is None:
        return
    for name in entry.names:
        kept = previous.exact.get(name) or previous.wildcard.get(name.removeprefix("*"))
        if kept is not None:
            _index(book, name, kept)


def _index(book: ContextBook, name: str, context: ssl.SSLContext) -> None:
    name = name.lower()
    if name.startswith("*."):
        book.wildcard.setdefault(name[1:], context)
    else:
        book.exact.setdefault(name, context)
