"""HTTP/1.1 wire details shared by both sides of the router: hop-by-hop headers, framing, router responses."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Final, TypeVar

# RFC 9110 §7.6.1 plus the de-facto ones; removed before forwarding in either direction.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Request headers the router sets itself: incoming ones are dropped unless the peer is a trusted proxy.
FORWARDED: Final = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
REWRITTEN: Final = HOP_BY_HOP | FORWARDED | {b"x-request-id"}
REQUEST_WATCHED: Final = REWRITTEN | {b"host", b"transfer-encoding", b"content-length"}
# Fix: never removed although a Connection header names them, since they frame the message or say where it
# goes (`Connection: Content-Length` would otherwise strip the length the router frames the body by).
FRAMING: Final = frozenset({b"host", b"content-length", b"transfer-encoding"})
MAX_HEAD_BYTES: Final = 16 * 1024
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
LAST_CHUNK: Final = b"0\r\n\r\n"
# Byte values to test membership with: `95 in data` is a memchr, where `b"_" in data` first tries the argument as
# an integer, and CPython 3.11 raises and clears a formatted TypeError for that (a microsecond per request header).
UNDERSCORE: Final = ord("_")
CLOSE_BRACKET: Final = ord("]")


_T = TypeVar("_T")
_SPELLINGS: Final[dict[bytes, bytes]] = {}  # a header name as a client sent it -> what `watched` answers for it


def _shape(length: int, first: int) -> int:
    """A header name's length and first letter, case folded (`& 31`: an upper- and a lower-case letter differ by 32)."""
    return length << 5 | (first & 31)


_SHAPE_LIMIT: Final = max(len(name) for name in REQUEST_WATCHED) + 1
# 1 at the shape of each watched name: most of a browser's headers (User-Agent, Accept-*, Cookie, Sec-Fetch-*) have
# none of these shapes, and are known not to be watched without hashing their names.
_SHAPES_WATCHED: Final = {_shape(len(name), name[0]) for name in REQUEST_WATCHED}
_WATCHED_SHAPES: Final = bytes([shape in _SHAPES_WATCHED for shape in range(_SHAPE_LIMIT << 5)])


def watched(name: bytes) -> bytes:
    """`name` lowered if the router acts on that request header (REQUEST_WATCHED, or any name with an underscore,
    see `rewritten_name`), else b"". A name whose length and first letter no watched name has is not watched (most
    are not); the others are remembered by spelling: clients send the same few spellings over and over, and one
    lookup costs less than lowering and hashing a new name for every header. Bounded: a client that invents names
    only churns it."""
    length = len(name)
    if (length == 0 or length >= _SHAPE_LIMIT or not _WATCHED_SHAPES[_shape(length, name[0])]) and (
        UNDERSCORE not in name
    ):
        return b""
    known = _SPELLINGS.get(name)
    if known is None:
        lower = name.lower()
        known = lower if lower in REQUEST_WATCHED or UNDERSCORE in lower else b""
        _remember(_SPELLINGS, name, known, 4096)
    return known


def _remember(memo: dict[bytes, _T], key: bytes, value: _T, most: int) -> None:
    """Bounded by clearing when full: what repeats is back at once, what never repeats only churns it."""
    if len(memo) >= most:
        memo.clear()
    memo[key] = value


def rewritten_name(lower: bytes) -> bytes:
    """Fix: `x_forwarded_for` is X-Forwarded-For to WSGI servers (both become HTTP_X_FORWARDED_FOR), so an
    underscore spelling of a header the router sets is that header; it slipped past the router untouched."""
    if UNDERSCORE in lower:
        dashed = lower.replace(b"_", b"-")
        if dashed in FORWARDED or dashed == b"x-request-id":
            return dashed
    return lower


def connection_options(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Fix: the header names a Connection header lists are hop-by-hop too (RFC 9110 §7.6.1); they were forwarded."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names - FRAMING)


# A response head's lines the router acts on. llhttp (strict) has checked the head: CRLF line ends, no obs-fold,
# no space before a colon, so "\r\n<name>:" can only be the start of a header line.
_RESPONSE_WATCHED: Final = re.compile(
    rb"\r\n(connection|keep-alive|proxy-connection|te|trailer|upgrade|proxy-authenticate|proxy-authorization"
    rb"|transfer-encoding|x-request-id|content-length):"
)  # matched against the lowered head


class ResponseHead:
    """A response head as the router forwards it: the endpoint's bytes minus its hop-by-hop lines."""

    __slots__ = ("chunked", "has_length", "kept", "length", "unknown_coding", "upgrade")

    def __init__(self, head: bytes) -> None:
        """`head` is the status line and header lines, each ending in CRLF, without the blank line."""
        self.has_length = self.chunked = self.unknown_coding = False
        self.length = -1  # Content-Length's value (llhttp has refused differing ones); -1: none
        self.upgrade: bytes | None = None
        pieces: list[bytes] = []
        named: set[bytes] | None = None
        last = 0
        lowered = head.lower()
        for match in _RESPONSE_WATCHED.finditer(lowered):
            name = match.group(1)
            if name == b"content-length":
                self._length(lowered[match.end() : lowered.find(b"\r\n", match.end())])
                continue
            value_start = match.end()
            line_end = lowered.find(b"\r\n", value_start)
            if name == b"connection":
                value = lowered[value_start:line_end].strip(b" \t")
                if value != b"keep-alive" and value != b"close":
                    named = _named_by(value, named)
            elif name == b"transfer-encoding":
                self._codings(lowered[value_start:line_end])
            elif name == b"upgrade":
                self.upgrade = head[value_start:line_end].strip(b" \t")
            pieces.append(head[last : match.start()])  # the line goes (the CRLF before it, not the one after)
            last = line_end
        if pieces:
            pieces.append(head[last:])
            head = b"".join(pieces)
        if named:
            head = drop_lines(head, named)
        if not head.startswith(b"HTTP/1.1 "):
            head = b"HTTP/1.1" + head[8:]  # an HTTP/1.0 endpoint's status line; llhttp checked it is HTTP/x.y
        self.kept = head

    def _length(self, value: bytes) -> None:
        self.has_length = True
        value = value.strip(b" \t")
        if value.isdigit():
            self.length = int(value)

    def _codings(self, value: bytes) -> None:
        """A (lowered) Transfer-Encoding value. Only `chunked` can be forwarded as it is framed: a coding before it
        (`gzip, chunked`) would reach the client as raw bytes labelled chunked, so the exchange answers 502
        instead, as nginx does."""
        codings = [c.strip(b" \t") for c in value.split(b",")]
        self.chunked = codings[-1] == b"chunked"
        self.unknown_coding = self.unknown_coding or any(c != b"chunked" for c in codings)


_CONNECTION_PLAIN: Final = frozenset({b"keep-alive", b"close", b"upgrade"})


def _named_by(connection: bytes, named: set[bytes] | None) -> set[bytes] | None:
    """`named` plus the header names a (lowered) Connection value lists; None while there are none."""
    for token in connection.split(b","):
        token = token.strip(b" \t")
        if token and token not in _CONNECTION_PLAIN:
            named = named or set()
            named.add(token)
    return named


_HEADS: Final[dict[bytes, ResponseHead]] = {}  # see response_head
_HEADS_MAX: Final = 512
_HEAD_REMEMBERED_BYTES: Final = 1024


def response_head(raw: bytes) -> ResponseHead:
    """`ResponseHead(raw)`, remembered for small heads: an endpoint sends the same head over and over (its Date
    changes once a second), and a lookup costs a small part of reading one (that was a tenth of the router's
    time per request; docs/benchmarks.md). Keyed by the whole head, so two heads that differ by a byte never
    share an answer; bounded in count and size, so heads that never repeat only churn it."""
    head = _HEADS.get(raw)
    if head is None:
        head = ResponseHead(raw)
        if len(raw) <= _HEAD_REMEMBERED_BYTES:
            _remember(_HEADS, raw, head, _HEADS_MAX)
    return head


def drop_lines(head: bytes, names: set[bytes] | frozenset[bytes]) -> bytes:
    """`head` without the header lines whose (lowered) name is in `names`, never the framing ones."""
    names = names - FRAMING
    lines = head.split(b"\r\n")
    kept = [lines[0]]
    kept += [line for line in lines[1:] if line and line.split(b":", 1)[0].lower() not in names]
    return b"\r\n".join(kept) + b"\r\n"


def splice_request_head(head: bytes, dropped: list[bytes], connection: list[bytes] | None) -> bytes:
    """The client's head minus the header lines named in `dropped` and those its Connection headers name, never
    the framing ones.

    `head` is the request line and header lines, each ending in CRLF, checked by llhttp (strict: CRLF only, no
    obs-fold, no space before a colon), so "\r\n<name>:" can only start a header line. `dropped` holds names as
    the parser reported them from this very head, so each is found as spelled, with no lowering of the head; the
    names a Connection header lists can be spelled any way on their lines, so only they are looked for in the
    lowered head. A regular expression over a browser's 700-byte head cost four times as much as the finds, and
    lowering it for every request was a third of what remained."""
    if len(dropped) == 1 and (connection is None or (len(connection) == 1 and connection[0] in _CONNECTION_PLAIN)):
        # One line to cut and none named (a browser's `Connection: keep-alive`): two finds, no sets (5.4 % of a
        # browser-like request went to the general way below).
        at = head.find(b"\r\n" + dropped[0] + b":")
        return head if at < 0 else head[:at] + head[head.find(b"\r\n", at + 2) :]
    cuts: set[tuple[int, int]] = set()  # (the CRLF before a line, the CRLF after it); a set: a line found twice
    for name in set(dropped):
        _find_lines(head, b"\r\n" + name + b":", cuts)
    if connection:
        named = {token.strip(b" \t").lower() for value in connection for token in value.split(b",")}
        named = named - _CONNECTION_PLAIN - FRAMING - {b""}  # `keep-alive`, `close`: options, not names
        if named:
            lowered = head.lower()
            for name in named:
                _find_lines(lowered, b"\r\n" + name + b":", cuts)
    if not cuts:
        return head
    pieces = []
    last = 0
    for at, line_end in sorted(cuts):
        pieces.append(head[last:at])
        last = line_end  # the line and the CRLF before it go; the CRLF after it stays
    pieces.append(head[last:])
    return b"".join(pieces)


def _find_lines(head: bytes, needle: bytes, cuts: set[tuple[int, int]]) -> None:
    at = head.find(needle)
    while at >= 0:
        line_end = head.find(b"\r\n", at + len(needle))
        cuts.add((at, line_end))
        at = head.find(needle, line_end)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def response(
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    close: bool = False,
    request_id: bytes | None = None,
) -> bytes:
    """A complete response made by the router itself (errors, the maintenance page)."""
    reason = HTTPStatus(status).phrase.encode()
    lines = [b"HTTP/1.1 %d %b" % (status, reason), b"content-type: " + content_type]
    lines.append(b"content-length: %d" % len(body))
    if request_id is not None:
        lines.append(b"x-request-id: " + request_id)
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"connection: close" if close else b"connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def error_body(status: int, detail: str) -> bytes:
    return f"{status} {HTTPStatus(status).phrase}: {detail}\n".encode()


MAINTENANCE_PAGE: Final = b"""<!doctype html>
<html lang="es"><head><meta charset="utf-8"><title>En mantenimiento / Under maintenance</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;color:#234}
h1{font-size:1.4rem}</style></head>
<body><h1>Volvemos en un momento</h1><p>El portal no puede atenderte ahora. Reintenta en unos segundos.</p>
<h1>We'll be right back</h1><p>The portal cannot serve you right now. Please retry in a few seconds.</p>
</body></html>
"""
