"""The checks a server makes on receipt of a well-formed request (RFC 3261 §8.2, §16.3).

The parser has already established that the message is *well formed*. These
checks decide whether it is *acceptable*, and if not, which status to answer
with. Each raises :class:`~conclave.sip.errors.RemoteProtocolError` carrying
that status (and, for 420, the ``Unsupported`` header to send).

The order follows RFC 3261: version first (505), then the headers every
request needs (400), a Content-Type for any non-empty body (400, §20.15),
CSeq agreement (400), the Request-URI scheme (416, §8.2.2.1), extensions
(420, §8.2.2.3 and §16.3 step 4), and finally the hop count (483, §16.3
step 3).
"""

from __future__ import annotations

from .errors import RemoteProtocolError
from .fields import parse_token
from .message import SIP_VERSION, Request, Response
from .uri import SipURI, TelURI

REQUIRED_REQUEST_HEADERS = ("Via", "To", "From", "Call-ID", "CSeq")
"""RFC 3261 §8.1.1. Max-Forwards is also mandatory for RFC 3261 elements, but
RFC 2543 clients omit it and §16.6 step 3 has a proxy add it, so its absence
is tolerated (RFC 4475 §3.4.1)."""

REQUIRED_RESPONSE_HEADERS = ("Via", "To", "From", "Call-ID", "CSeq")


def check_body_type(msg: Request | Response) -> None:
    """400 for a non-empty body without Content-Type (RFC 3261 §20.15: it MUST be present).

    Nothing could tell a receiver (or whoever this server forwards the message
    to) what such a body is, so it is refused rather than guessed at. An empty
    Content-Type value is as good as none.
    """
    if msg.body and not (msg.headers.get("Content-Type") or "").strip():
        raise RemoteProtocolError("missing Content-Type header for a non-empty body")


SIP_SCHEMES = frozenset({"sip", "sips", "tel"})
"""Request-URI schemes Conclave can route; anything else is a 416."""


def check_version(msg: Request | Response) -> None:
    if msg.version != SIP_VERSION:
        raise RemoteProtocolError(f"SIP version {msg.version} is not supported", 505)


def check_request(
    req: Request,
    *,
    supported: frozenset[str] = frozenset(),
    check_require: bool = True,
    forwarding: bool = True,
) -> None:
    """Apply the receipt checks to ``req`` and raise on the first failure.

    ``supported`` holds the option tags this element implements. ``Require``
    is checked only when ``check_require`` is set, i.e. when this element is
    the UAS (a proxy ignores Require, §16.3). With ``forwarding`` set, a
    Max-Forwards of 0 gets 483 (§16.3 step 3) except for a REGISTER, or an OPTIONS
    addressed to the element itself (no user part), which it answers itself.
    """
    check_version(req)
    for name in REQUIRED_REQUEST_HEADERS:
        if name not in req.headers:
            raise RemoteProtocolError(f"missing {name} header")
    check_body_type(req)
    cseq = req.cseq
    if cseq.method != req.method:
        raise RemoteProtocolError(f"CSeq method {cseq.method} does not match {req.method}")
    if not isinstance(req.uri, SipURI | TelURI) or req.uri.scheme.lower() not in SIP_SCHEMES:
        raise RemoteProtocolError(f"URI scheme {req.uri.scheme!r} is not supported", 416)
    if req.method == "REGISTER" and not isinstance(req.to_addr.uri, SipURI):
        # RFC 3261 §10.3 step 5: the address of record must be SIP or SIPS.
        raise RemoteProtocolError("To of a REGISTER must be a SIP or SIPS URI")
    check_extensions(req, "Proxy-Require", supported)
    if check_require and req.method not in ("ACK", "CANCEL"):
        check_extensions(req, "Require", supported)
    if forwarding and not _for_this_element(req) and req.max_forwards == 0:
        raise RemoteProtocolError("Max-Forwards exhausted", 483)


def check_extensions(req: Request, header: str, supported: frozenset[str]) -> None:
    """420 with ``Unsupported`` listing every option tag in ``header`` we lack."""
    unknown: list[str] = []
    for value in req.headers.get_all(header):
        if not value:
            continue
        tag = parse_token(value, header)
        if tag.lower() not in supported and tag not in unknown:
            unknown.append(tag)
    if unknown:
        raise RemoteProtocolError(
            f"unsupported extension in {header}: {', '.join(unknown)}",
            420,
            headers=(("Unsupported", ", ".join(unknown)),),
        )


def check_response(resp: Response) -> None:
    """A response a client transaction can use (§8.1.3); else it is dropped."""
    check_version(resp)
    for name in REQUIRED_RESPONSE_HEADERS:
        if name not in resp.headers:
            raise RemoteProtocolError(f"missing {name} header")
    check_body_type(resp)


def _for_this_element(req: Request) -> bool:
    """A REGISTER, or an OPTIONS to a URI with no user part: the server answers."""
    if req.method == "REGISTER":
        return True
    return req.method == "OPTIONS" and isinstance(req.uri, SipURI) and req.uri.user is None
