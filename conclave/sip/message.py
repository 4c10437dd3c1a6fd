"""The SIP message model: :class:`Request` and :class:`Response`.

A message is a start line, ordered :class:`~conclave.sip.headers.Headers` and
a body of bytes. ``serialise()`` renders the wire form; the parser turns it
back into an equal object (``parse(m.serialise()) == m``).

Typed views, parsed once
------------------------
The headers every element reads are offered typed, as properties of the
message: :attr:`~Request.top_via` and :attr:`~Request.vias`,
:attr:`~Request.from_addr` / :attr:`~Request.to_addr` (with ``from_tag``,
``to_tag``, ``from_aor``, ``to_aor``), :attr:`~Request.cseq`,
:attr:`~Request.call_id`, :attr:`~Request.contacts`, :attr:`~Request.routes`
and :attr:`~Request.max_forwards`. Each is computed on first use and kept
with the headers (:meth:`Headers.cached`); a change to a header through any
``Headers`` method (a proxy pushing its Via, popping a Route, setting
Max-Forwards) drops that header's view, so a view always describes the
fields as they are. Views are immutable and may be shared between messages
(they come from the bounded memos of :mod:`conclave.sip.address` and
:mod:`conclave.sip.fields`, and ``headers.copy()`` keeps them): to change a
value, ``copy()`` it and write the header. Reading a view of a header that
is missing or malformed raises :class:`RemoteProtocolError` (400), except
where the property says it gives None or ``()``.

Toward lazy parsing and raw forwarding (issue 14)
-------------------------------------------------
Everything outside this module reads headers only through ``Headers``
methods and these views, and writes them only through ``Headers`` methods.
That is the seam for the next step, which changes nothing for callers:

* *Lazy parsing.* The parser can keep the received bytes and the offset of
  each field line, and check only what routing needs at receipt (start line,
  framing, top Via, CSeq, Call-ID, From/To, Max-Forwards, Route); a view is
  then parsed from its raw field on first use, and an error in a field
  nobody reads costs nothing. Materialising ``Headers`` from the offsets can
  itself be deferred to the first lookup.
* *Raw forwarding.* A message parsed from bytes can remember them beside a
  log of the edits made through ``Headers`` (push a Via or Record-Route,
  pop a Route, replace Max-Forwards, remove a field). ``serialise()`` then
  copies the untouched byte ranges and writes only the edited fields and
  Content-Length, instead of rendering every field again; any other change
  (a new Request-URI, a new body, wholesale new headers) falls back to
  rendering. The edit log belongs in ``Headers``, where every mutation
  already passes (the same place that drops views today).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .address import SharedNameAddr, peek_contact_value, peek_name_addr
from .errors import LocalProtocolError, RemoteProtocolError
from .fields import CSeq, SharedVia, Via, check_via, parse_cseq, parse_max_forwards, peek_via
from .headers import Headers
from .uri import URI

SIP_VERSION = "SIP/2.0"

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def default_reason(status: int) -> str:
    """The RFC 3261 §21 reason phrase for ``status`` (or a class default)."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


def _render(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    saw_length = False
    for name, value in headers:
        if name == "Content-Length":
            if saw_length:
                continue
            saw_length = True
            value = str(len(body))
        lines.append(f"{name}: {value}")
    if not saw_length:
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


# --- the views: one per header, computed from the fields of that name ---------------

FIRST_VALUE_VIEWS: Mapping[str, Callable[[str], object]] = {
    "via": peek_via,
    "from": peek_name_addr,
    "to": peek_name_addr,
    "cseq": parse_cseq,
    "max-forwards": parse_max_forwards,
}
"""Header key -> the parser of its first value, whose parse is the view: the
top Via, and single-valued headers (which have only one)."""

LIST_VIEWS: Mapping[str, Callable[[str], object]] = {
    "contact": peek_contact_value,
    "route": peek_name_addr,
}
"""Header key -> the parser of each value: the view of a list header is the
tuple of its values' parses, in order. The parser, which runs these same
functions to check a message, hands both kinds of view over with it."""


def _top_via(headers: Headers) -> SharedVia:
    return peek_via(_required(headers, "Via"))


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise RemoteProtocolError(f"missing {name} header")
    return value


def _from(headers: Headers) -> SharedNameAddr:
    return peek_name_addr(_required(headers, "From"))


def _to(headers: Headers) -> SharedNameAddr:
    return peek_name_addr(_required(headers, "To"))


def _cseq(headers: Headers) -> CSeq:
    return parse_cseq(_required(headers, "CSeq"))


def _contacts(headers: Headers) -> tuple[SharedNameAddr | None, ...]:
    return tuple(map(peek_contact_value, headers.get_all("Contact")))


def _routes(headers: Headers) -> tuple[SharedNameAddr, ...]:
    return tuple(map(peek_name_addr, headers.get_all("Route")))


def _max_forwards(headers: Headers) -> int | None:
    value = headers.get("Max-Forwards")
    return None if value is None else parse_max_forwards(value)


class _Views:
    """The typed views both kinds of message share (see the module docstring)."""

    __slots__ = ()
    headers: Headers

    @property
    def top_via(self) -> SharedVia:
        """The top Via (RFC 3261 §8.1.1.7, §17); 400 if missing or malformed."""
        return self.headers.cached("via", _top_via)

    @property
    def vias(self) -> tuple[SharedVia, ...]:
        """Every Via, top first; ``()`` without any. 400 if one is malformed.

        Only the top Via is kept with the message (it is read on every hop;
        all of them once per request, for loop detection): the others come
        from the shared memo the parser filled, so none is parsed twice.
        """
        values = self.headers.get_all("Via")
        if not values:
            return ()
        return (self.headers.cached("via", _top_via), *map(peek_via, values[1:]))

    @property
    def from_addr(self) -> SharedNameAddr:
        """The From address; 400 if missing or malformed."""
        return self.headers.cached("from", _from)

    @property
    def to_addr(self) -> SharedNameAddr:
        """The To address; 400 if missing or malformed."""
        return self.headers.cached("to", _to)

    @property
    def from_tag(self) -> str | None:
        """The From tag (RFC 3261 §19.3), None if untagged; 400 as :attr:`from_addr`."""
        return self.headers.cached("from", _from).tag

    @property
    def to_tag(self) -> str | None:
        """The To tag, None if untagged (out of dialog); 400 as :attr:`to_addr`."""
        return self.headers.cached("to", _to).tag

    @property
    def from_aor(self) -> str | None:
        """The From URI's canonical address of record (:func:`~conclave.sip.address.aor_of`),
        or None when From is missing, malformed or names no SIP user."""
        try:
            return self.headers.cached("from", _from).aor
        except RemoteProtocolError:
            return None

    @property
    def to_aor(self) -> str | None:
        """As :attr:`from_aor`, for To."""
        try:
            return self.headers.cached("to", _to).aor
        except RemoteProtocolError:
            return None

    @property
    def cseq(self) -> CSeq:
        """The CSeq number and method; 400 if missing or malformed."""
        return self.headers.cached("cseq", _cseq)

    @property
    def call_id(self) -> str | None:
        """The Call-ID, as received, or None."""
        return self.headers.get("Call-ID")

    @property
    def contacts(self) -> tuple[SharedNameAddr | None, ...]:
        """Every Contact, in order (None for ``*``); ``()`` without any. 400 if malformed."""
        return self.headers.cached("contact", _contacts)

    @property
    def routes(self) -> tuple[SharedNameAddr, ...]:
        """Every Route entry, in order; ``()`` without any. 400 if one is malformed."""
        return self.headers.cached("route", _routes)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 §20.22), None if absent; 400 if malformed."""
        return self.headers.cached("max-forwards", _max_forwards)

    def replace_top_via(self, via: Via) -> None:
        """Write ``via`` over the top Via; it becomes the :attr:`top_via` view as it is.

        This is how a server records where a request came from (``received``,
        ``rport``: RFC 3261 §18.2.1, RFC 3581 §4): change a copy of
        :attr:`top_via` and write it back, and the stamped Via is not parsed
        again when the transaction layer reads it. Raises
        :class:`LocalProtocolError` if ``via`` would not parse back equal (see
        :func:`~conclave.sip.fields.check_via`).
        """
        check_via(via)
        self.headers.replace_first("Via", str(via))
        self.headers._set_view("via", via.frozen())


@dataclass(eq=True)
class Request(_Views):
    """A SIP request. ``uri`` is the parsed Request-URI."""

    method: str
    uri: URI
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def serialise(self) -> bytes:
        """The wire form. Content-Length is always written and always true."""
        return _render(self.start_line, self.headers, self.body)


@dataclass(eq=True)
class Response(_Views):
    """A SIP response."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def serialise(self) -> bytes:
        """The wire form. Content-Length is always written and always true."""
        return _render(self.start_line, self.headers, self.body)


Message = Request | Response


_RESPONSE_COPIED = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` as RFC 3261 §8.2.6.2 says.

    Via (all values, in order), From, To, Call-ID and CSeq are copied. If
    ``to_tag`` is given and To has no tag yet, it is added (a UAS must tag
    every response except 100, §8.2.6.2). ``headers`` are appended after.
    """
    out = Headers()
    retagged = False
    tagged: SharedNameAddr | None = None
    for name in _RESPONSE_COPIED:
        for value in request.headers.get_all(name):
            if name == "To" and to_tag is not None and status > 100:
                to = peek_name_addr(value)
                if to.tag is None:
                    value = f"{value};tag={to_tag}"
                    retagged, tagged = True, _tagged(to, to_tag)
            out.add(name, value)
    # The copied fields bring the request's views of them along (the server
    # transaction reads the response's CSeq and To tag at once); a To that
    # gained a tag gets its view from the request's, not from a new parse.
    source = request.headers
    for key in ("via", "from", "cseq") if retagged else ("via", "from", "cseq", "to"):
        view = source._get_view(key)
        if view is not None:
            out._set_view(key, view)
    if tagged is not None and source.count("To") == 1:
        out._set_view("to", tagged)
    for name, value in headers:
        out.add(name, value)
    return Response(status, reason if reason is not None else default_reason(status), out, body)


def _tagged(to: SharedNameAddr, tag: str) -> SharedNameAddr | None:
    """``to`` with ``;tag=`` appended, as parsing the tagged value would give it."""
    params = to.params.copy()
    try:
        params.set("tag", tag)
    except LocalProtocolError:
        return None  # not a token: the view is left to a parse of the value
    return SharedNameAddr(uri=to.uri, display_name=to.display_name, params=params, angle=to.angle)
