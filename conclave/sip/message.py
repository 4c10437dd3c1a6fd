"""The SIP message model: :class:`Request` and :class:`Response`.

A message is a start line, ordered :class:`~conclave.sip.headers.Headers` and
a body of bytes. ``serialise()`` renders the wire form; the parser turns it
back into an equal object (``parse(m.serialise()) == m``).

Typed views of individual header fields (Via, CSeq, From/To, ...) live in
:mod:`conclave.sip.fields`; the accessors here are conveniences over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(eq=True)
class Request:
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

    @property
    def call_id(self) -> str | None:
        return self.headers.get("Call-ID")


@dataclass(eq=True)
class Response:
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

    @property
    def call_id(self) -> str | None:
        return self.headers.get("Call-ID")


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
    for name in _RESPONSE_COPIED:
        for value in request.headers.get_all(name):
            if name == "To" and to_tag is not None and status > 100 and _untagged(value):
                value = f"{value};tag={to_tag}"
            out.add(name, value)
    for name, value in headers:
        out.add(name, value)
    return Response(status, reason if reason is not None else default_reason(status), out, body)


def _untagged(to_value: str) -> bool:
    from .address import peek_name_addr

    return peek_name_addr(to_value).tag is None
