"""Transaction keys: which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3).

Client side (§17.1.3)
---------------------
A response matches a client transaction when the branch of its top Via and
the method of its CSeq equal those of the request that created the
transaction. The method is needed because a CANCEL carries the same branch
as the INVITE it cancels (§9.1).

Server side, RFC 3261 requests (§17.2.3)
----------------------------------------
When the top Via branch starts with the magic cookie ``z9hG4bK``
(§8.1.1.7), a request matches a server transaction when the branch, the
sent-by of the top Via and the method are equal, except that an ACK matches
the INVITE transaction. A CANCEL is its own transaction (its method differs)
and finds the INVITE it cancels with the same key and method INVITE (§9.2).

Server side, RFC 2543 fallback (§17.2.3)
----------------------------------------
Without the cookie the branch is not unique, so the request is identified by
its Request-URI, To tag, From tag, Call-ID, CSeq and top Via. An ACK is
special: its To tag is the one the server put in its response, which the
INVITE did not have, so ACKs are looked up by :func:`ack_key` (everything
but the To tag and the method) and the caller compares the To tag with the
tag of the response the transaction sent.

Keys are plain tuples, hashable and cheap. The Request-URI is compared in
its rendered form: a retransmission repeats it octet for octet, so full
§19.1.4 equivalence is not needed to recognise one. The header parts come
from the message's typed views, parsed once per message
(:mod:`conclave.sip.message`).
"""

from __future__ import annotations

from typing import TypeAlias

from ..fields import SharedVia, Via
from ..message import Request, Response

ClientKey: TypeAlias = tuple[str, str]
"""(branch, method)."""

ServerKey: TypeAlias = tuple[object, ...]
"""("3261", branch, sent-by, method) or ("2543", Request-URI, To tag, From
tag, Call-ID, CSeq number, method, top Via)."""

AckKey: TypeAlias = tuple[object, ...]
"""RFC 2543 ACK lookup: ("2543-ack", Request-URI, From tag, Call-ID, CSeq
number, top Via)."""

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})
"""Via transports that retransmit by themselves (RFC 3261 §18, RFC 4168,
RFC 7118). Anything else (UDP, or an unknown token) is treated as
unreliable, which errs towards retransmitting."""


def top_via(message: Request | Response) -> SharedVia:
    """``message.top_via``: the parsed top Via (read-only); RemoteProtocolError
    (400) if it is absent or malformed."""
    return message.top_via


def is_reliable(via: Via) -> bool:
    """Whether the transport named in ``via`` is reliable (see RELIABLE_TRANSPORTS)."""
    return via.transport.upper() in RELIABLE_TRANSPORTS


def to_tag(message: Request | Response) -> str | None:
    """The tag of the To header (None if untagged); RemoteProtocolError if To
    is missing or malformed."""
    return message.to_tag


def _via_form(via: Via) -> tuple[object, ...]:
    return (via.transport, via.host.lower(), via.port, str(via.params))


def client_key(message: Request | Response) -> ClientKey:
    """The §17.1.3 key: top Via branch and the method (a response's CSeq method)."""
    via = message.top_via
    method = message.method if isinstance(message, Request) else message.cseq.method
    return (via.branch or "", method)


def server_key(request: Request, *, method: str | None = None) -> ServerKey:
    """The §17.2.3 key of ``request`` (ACK maps to its INVITE).

    ``method`` overrides the method, which is how a CANCEL finds the INVITE
    it cancels (§9.2): ``server_key(cancel, method="INVITE")``. Raises
    RemoteProtocolError if a header the key needs is missing or malformed.
    """
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    if via.rfc3261_branch:
        return ("3261", via.branch, via.host.lower(), via.port, method)
    return (
        "2543",
        str(request.uri),
        request.to_tag,
        request.from_tag,
        request.call_id,
        request.cseq.seq,
        method,
        _via_form(via),
    )


def ack_key(request: Request) -> AckKey:
    """RFC 2543 ACK matching: all of the INVITE's identifiers but the To tag.

    Computed from the INVITE when its transaction is created and from each
    ACK that arrives; the two are equal when the ACK is for that INVITE.
    """
    return (
        "2543-ack",
        str(request.uri),
        request.from_tag,
        request.call_id,
        request.cseq.seq,
        _via_form(request.top_via),
    )
