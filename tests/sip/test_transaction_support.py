"""Shared helpers for the transaction tests: messages, a stepped clock, event filters."""

from __future__ import annotations

from collections.abc import Sequence

from conclave.sip.message import Request, Response, make_response
from conclave.sip.parser import parse_message
from conclave.sip.transaction import Event, Transmit

SOURCE = ("udp", ("192.0.2.10", 5060))
DEST = ("udp", ("192.0.2.20", 5060))


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK776asdhds",
    transport: str = "UDP",
    sent_by: str = "pc33.example.com",
    to_tag: str | None = None,
    from_tag: str | None = "1928301774",
    call_id: str = "a84b4c76e66710@pc33.example.com",
    cseq: int = 314159,
    cseq_method: str | None = None,
    uri: str = "sip:bob@example.com",
    extra: Sequence[str] = (),
) -> Request:
    """A request built from text and parsed, as the adapter would hand it over."""
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else "")
    to = "Bob <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    frm = "Alice <sip:alice@example.com>" + (f";tag={from_tag}" if from_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"To: {to}",
        f"From: {frm}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        *extra,
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, *, to_tag: str | None = "srv1") -> Response:
    """A response to ``req`` as the far end would send it."""
    return make_response(req, status, to_tag=to_tag)


def reparse(data: bytes) -> Request | Response:
    return parse_message(data)


def sent(events: Sequence[Event]) -> list[bytes]:
    """The data of every Transmit event."""
    return [e.data for e in events if isinstance(e, Transmit)]


def kinds(events: Sequence[Event]) -> list[str]:
    """Event class names, for compact assertions."""
    return [type(e).__name__ for e in events]


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


class Clock:
    """A stepped clock: a float that only the test advances."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
