"""Parse one SIP message from bytes (RFC 3261 §7, §18.3, §25).

``parse_message`` is the only entry point. It returns a
:class:`~conclave.sip.message.Request` or
:class:`~conclave.sip.message.Response`, or raises
:class:`~conclave.sip.errors.RemoteProtocolError` carrying the status to
answer with. It never raises anything else, whatever the input.

The parser checks *syntax*: the start line, header field syntax, the typed
headers every element relies on (Via, From, To, Call-ID, CSeq, Max-Forwards,
Content-Length, Content-Type, Contact, Route, Record-Route, Date, Expires),
that single-valued headers appear at most once, and the framing of the body.
Checks that concern what a server will *do* with a well-formed message (the
SIP version, URI schemes, required headers, CSeq/method agreement, Require,
Max-Forwards exhausted) live in :mod:`conclave.sip.validate`, so that a
server can still build a proper response to such messages.

Header bytes are decoded as UTF-8 with ``surrogateescape``: RFC 3261 allows
UTF-8 in many places, and any octet that is not UTF-8 survives unchanged and
is written back out as the same octet.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from .address import peek_name_addr
from .errors import RemoteProtocolError
from .fields import (
    check_date,
    parse_content_length,
    parse_content_type,
    parse_expires,
)
from .grammar import TOKEN, WORD, split_outside_quotes
from .headers import (
    EMPTY_LIST_ALLOWED,
    LIST_HEADERS,
    SINGLE_HEADERS,
    Headers,
    canonical_name,
    name_and_key,
)
from .limits import (
    MAX_HEADER_COUNT,
    MAX_HEADER_SECTION,
    MAX_LINE_LENGTH,
    MAX_MESSAGE_SIZE,
    MAX_VIA_COUNT,
)
from .message import FIRST_VALUE_VIEWS, LIST_VIEWS, Request, Response
from .uri import SipURI, parse_uri

#   Request-Line = Method SP Request-URI SP SIP-Version CRLF
#   SIP-Version  = "SIP" "/" 1*DIGIT "." 1*DIGIT
_VERSION = r"[Ss][Ii][Pp]/\d{1,3}\.\d{1,3}"
_REQUEST_LINE_RE = re.compile(rf"(?P<method>{TOKEN}) (?P<uri>[^ \t\r\n]+) (?P<version>{_VERSION})")
#   Status-Line  = SIP-Version SP Status-Code SP Reason-Phrase CRLF
#   Status-Code  = 3DIGIT ; Reason-Phrase may be empty (RFC 4475 §3.1.1.13)
_STATUS_LINE_RE = re.compile(rf"(?P<version>{_VERSION}) (?P<status>[1-6]\d\d)(?: (?P<reason>.*))?")
#   Call-ID = ( "Call-ID" / "i" ) HCOLON callid ; callid = word [ "@" word ]
_CALLID_RE = re.compile(rf"{WORD}(?:@{WORD})?")
#   header-name = token ; HCOLON = *( SP / HTAB ) ":" SWS
_HEADER_NAME_RE = re.compile(TOKEN)

_ADDRESS_HEADERS = ("From", "To")
_ROUTE_HEADERS = ("Route", "Record-Route", "Path", "Service-Route")


def parse_message(data: bytes, *, datagram: bool = True) -> Request | Response:
    """Parse exactly one message.

    With ``datagram=True`` (UDP, RFC 3261 §18.3), ``data`` is the whole
    datagram: octets beyond Content-Length are ignored, fewer octets than it
    promises are a 400, and a missing Content-Length means "the rest". With
    ``datagram=False``, ``data`` is one frame cut by
    :class:`~conclave.sip.framing.StreamFramer`, and Content-Length must be
    present and exact.
    """
    try:
        return _parse(data, datagram)
    except RemoteProtocolError:
        raise
    except (ValueError, IndexError, UnicodeError, OverflowError) as exc:  # defensive
        raise RemoteProtocolError(f"unparseable message ({type(exc).__name__})") from None


def _parse(data: bytes, datagram: bool) -> Request | Response:
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("message larger than 64 KiB", 513)
    # RFC 3261 §7.5: empty lines before the start line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        if datagram and data.endswith(b"\r\n") and len(data) > start:
            # The header section runs to the end of the datagram with no
            # blank line (seen in the wild; RFC 4475 baddn). Treat as no body.
            head_bytes = data[start:-2]
            body_start = len(data)
        else:
            raise RemoteProtocolError("header section is not terminated by an empty line")
    else:
        head_bytes = data[start:end]
        body_start = end + 4
    if len(head_bytes) > MAX_HEADER_SECTION:
        raise RemoteProtocolError("header section too large", 513)
    head = head_bytes.decode("utf-8", "surrogateescape")
    start_line, fields = _split_fields(head)
    items, keys = _build_headers(fields)
    headers = Headers._from_lists(items, keys, _check_headers(items, keys))
    body = _take_body(data, body_start, headers, datagram)
    if "Content-Length" not in headers:
        # Normalise: the body's length is known now, and every message
        # Conclave sends carries Content-Length (§18.3), so record it.
        headers.add("Content-Length", str(len(body)))

    m = _REQUEST_LINE_RE.fullmatch(start_line)
    if m is not None:
        method = m.group("method")
        uri = parse_uri(m.group("uri"))
        if isinstance(uri, SipURI) and uri.headers:
            # RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI
            # (RFC 4475 §3.1.2.11).
            raise RemoteProtocolError("Request-URI must not carry headers")
        return Request(method, uri, headers, body, m.group("version").upper())
    m = _STATUS_LINE_RE.fullmatch(start_line)
    if m is not None:
        return Response(
            int(m.group("status")),
            m.group("reason") or "",
            headers,
            body,
            m.group("version").upper(),
        )
    if start_line[:4].upper() == "SIP/":
        raise RemoteProtocolError("malformed Status-Line")
    raise RemoteProtocolError("malformed Request-Line")


def _split_fields(head: str) -> tuple[str, list[tuple[str, str]]]:
    """Split the header section into the start line and unfolded fields."""
    lines = head.split("\r\n")
    if len(lines) > MAX_HEADER_COUNT + 1:
        raise RemoteProtocolError("too many header lines")
    crlf = len(lines) - 1
    if head.count("\r") != crlf or head.count("\n") != crlf:
        raise RemoteProtocolError("bare CR or LF in header section")
    if max(map(len, lines)) > MAX_LINE_LENGTH:
        raise RemoteProtocolError("header line too long")
    start_line = lines[0]
    folded = _unfold(lines[1:]) if "\r\n " in head or "\r\n\t" in head else lines[1:]
    fields: list[tuple[str, str]] = []
    for line in folded:
        colon = line.find(":")
        if colon <= 0:
            raise RemoteProtocolError(f"header line without a name and colon: {line[:40]!r}")
        name = line[:colon].rstrip(" \t")
        if _HEADER_NAME_RE.fullmatch(name) is None:
            raise RemoteProtocolError(f"malformed header name: {name[:40]!r}")
        fields.append((name, line[colon + 1 :].strip(" \t")))
    return start_line, fields


def _unfold(lines: list[str]) -> list[str]:
    folded: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            # RFC 3261 §7.3.1: a line starting with whitespace continues the
            # previous field; the fold is equivalent to one SP.
            if not folded:
                raise RemoteProtocolError("continuation line after the start line")
            folded[-1] = folded[-1].rstrip(" \t") + " " + line.strip(" \t")
            if len(folded[-1]) > MAX_LINE_LENGTH:
                raise RemoteProtocolError("header field too long")
        else:
            folded.append(line)
    return folded


def _build_headers(fields: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    items: list[tuple[str, str]] = []
    keys: list[str] = []
    for raw_name, value in fields:
        name, key = name_and_key(raw_name)
        if name not in LIST_HEADERS:
            items.append((name, value))
            keys.append(key)
            continue
        parts = [p.strip(" \t") for p in split_outside_quotes(value, ",")]
        if len(parts) == 1 and not parts[0]:
            if name in EMPTY_LIST_ALLOWED:
                items.append((name, ""))
                keys.append(key)
                continue
            raise RemoteProtocolError(f"empty {name} header")
        if any(not p for p in parts):
            raise RemoteProtocolError(f"empty element in {name} list")
        for part in parts:
            items.append((name, part))
            keys.append(key)
    return items, keys


def _check_call_id(value: str) -> None:
    if _CALLID_RE.fullmatch(value) is None:
        raise RemoteProtocolError("malformed Call-ID")


_KEEP, _FIRST, _LIST = 0, 1, 2

_CHECKS: dict[str, tuple[Callable[[str], object], int]] = {
    "call-id": (_check_call_id, _KEEP),
    "content-type": (parse_content_type, _KEEP),
    "record-route": (peek_name_addr, _KEEP),
    "path": (peek_name_addr, _KEEP),
    "service-route": (peek_name_addr, _KEEP),
    "date": (check_date, _KEEP),
    "expires": (parse_expires, _KEEP),
    **{key: (parse, _FIRST) for key, parse in FIRST_VALUE_VIEWS.items()},
    **{key: (parse, _LIST) for key, parse in LIST_VIEWS.items()},
}
"""The typed headers every element relies on (by lookup key), the check for
one value, and what becomes of its result: nothing, or the message's typed
view of that header (Via, From, To, CSeq, Max-Forwards, Contact, Route), so
that what the parser checked is never parsed again. Address and Via values
go through the shared memos."""

_SINGLE_KEYS = tuple(name.lower() for name in sorted(SINGLE_HEADERS))


def _check_headers(items: list[tuple[str, str]], keys: list[str]) -> dict[str, object]:
    """Check the typed fields; return the views their parses make (see _CHECKS)."""
    counts = keys.count
    for key in _SINGLE_KEYS:
        if counts(key) > 1:
            raise RemoteProtocolError(f"more than one {canonical_name(key)} header field")
    if counts("via") > MAX_VIA_COUNT:
        raise RemoteProtocolError("too many Via header values")
    views: dict[str, object] = {}
    lists: dict[str, list[object]] = {}
    checks = _CHECKS
    for key, (_name, value) in zip(keys, items, strict=True):
        entry = checks.get(key)
        if entry is None:
            continue
        check, kind = entry
        parsed = check(value)
        if kind == _FIRST:
            views.setdefault(key, parsed)
        elif kind == _LIST:
            lists.setdefault(key, []).append(parsed)
    for key, values in lists.items():
        views[key] = tuple(values)
    return views


def _take_body(data: bytes, body_start: int, headers: Headers, datagram: bool) -> bytes:
    available = len(data) - body_start
    value = headers.get("Content-Length")
    if value is None:
        if not datagram:
            raise RemoteProtocolError("Content-Length is required on stream transports")
        return data[body_start:]
    length = parse_content_length(value)
    if length > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("body larger than the message size limit", 413)
    if length > available:
        # RFC 3261 §18.3: over UDP a shorter body than Content-Length is a 400.
        raise RemoteProtocolError("body shorter than Content-Length")
    if not datagram and length != available:
        raise RemoteProtocolError("body longer than Content-Length")
    # Octets beyond Content-Length in a datagram are ignored (RFC 4475 dblreq).
    return data[body_start : body_start + length]


_SALVAGE = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
_TO_TAG = re.compile(r";\s*tag\s*=", re.IGNORECASE)
_TO_LINE_TAGGED = re.compile(rb"\r\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)
_CREDENTIALS_LINE = re.compile(rb"\r\n(?:proxy-)?authorization[ \t]*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Glance:
    """What :func:`peek_kind` saw."""

    method: str
    """The request method; ``""`` for a response."""
    in_dialog: bool
    """The To header carries a tag."""
    credentials: bool
    """An Authorization or Proxy-Authorization header is present."""


def peek_kind(data: bytes) -> Glance | None:
    """A glance at a message before parsing it. None when the start line is
    not SIP at all. Cheap (a few C-level searches), for deciding what to do
    under overload; it judges nothing, the parser does."""
    space = data.find(b" ", 0, 32)
    if space <= 0:
        return None
    first = data[:space]
    if first == b"SIP/2.0":
        return Glance("", False, False)
    head_end = data.find(b"\r\n\r\n", 0, MAX_HEADER_SECTION)
    head = data if head_end < 0 else data[:head_end]
    return Glance(
        first.decode("ascii", "replace"),
        _TO_LINE_TAGGED.search(head) is not None,
        _CREDENTIALS_LINE.search(head) is not None,
    )


def salvage_error_response(data: bytes, error: RemoteProtocolError) -> bytes | None:
    """A best-effort error response to a request the parser refused.

    RFC 3261 §8.2 wants a 400 for a malformed request whenever an answer can
    be routed back. This reads the start line and the Via, From, To, Call-ID
    and CSeq lines leniently; if it is a request (not an ACK) and all five
    are there, it returns the wire form of ``error.status`` with the reason
    as the reason phrase. Otherwise None: the caller drops and logs it.
    """
    head = data[:MAX_HEADER_SECTION].split(b"\r\n\r\n", 1)[0]
    try:
        text = head.decode("utf-8", "surrogateescape")
    except UnicodeError:  # pragma: no cover - surrogateescape cannot fail
        return None
    lines = text.split("\r\n")
    first = lines[0].split(" ", 1)[0] if lines else ""
    if not first or first.upper().startswith("SIP/") or first == "ACK":
        return None
    if _HEADER_NAME_RE.fullmatch(first) is None:
        return None
    kept: list[str] = []
    seen: set[str] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.strip().lower()
        if not sep or key not in _SALVAGE or "\r" in line or "\n" in line:
            continue
        if len(line) > MAX_LINE_LENGTH:
            return None
        canon = canonical_name(key)
        seen.add(canon)
        value = value.strip()
        if canon == "To" and _TO_TAG.search(value) is None:
            # §8.2.6.2: a tag on a final response's To, the same for every
            # retransmission of the request (§8.2.7): derived from it.
            value += ";tag=" + hashlib.blake2b(head, digest_size=6).hexdigest()
        kept.append(f"{canon}: {value}")
    if seen != {"Via", "From", "To", "Call-ID", "CSeq"}:
        return None
    reason = error.reason.replace("\r", " ").replace("\n", " ")[:120]
    out = [f"SIP/2.0 {error.status} {reason}", *kept, *(f"{n}: {v}" for n, v in error.headers)]
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", "surrogateescape")
