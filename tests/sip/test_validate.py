"""Receipt checks not covered by the torture corpus: a body needs a Content-Type."""

from __future__ import annotations

import pytest

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.lint import judge
from conclave.sip.message import Request, Response
from conclave.sip.parser import parse_message
from conclave.sip.validate import check_request, check_response

REQUEST = (
    "MESSAGE sip:bob@example.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:bob@example.test>\r\n"
    "From: <sip:alice@example.test>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710\r\n"
    "CSeq: 1 MESSAGE\r\n"
)
RESPONSE = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    "To: <sip:bob@example.test>;tag=a6c85cf\r\n"
    "From: <sip:alice@example.test>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710\r\n"
    "CSeq: 1 INVITE\r\n"
)


def message(head: str, extra: str, body: bytes) -> bytes:
    return f"{head}{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_request_body_without_content_type_is_400() -> None:
    req = parse_message(message(REQUEST, "", b"hello"))
    assert isinstance(req, Request)
    with pytest.raises(RemoteProtocolError) as caught:
        check_request(req)
    assert caught.value.status == 400
    assert "Content-Type" in caught.value.reason
    verdict = judge(message(REQUEST, "", b"hello"))
    assert (verdict.kind, verdict.status) == ("reject", 400)
    assert verdict.reason == "missing Content-Type header for a non-empty body"


@pytest.mark.parametrize("header", ["Content-Type: text/plain\r\n", "c: text/plain\r\n"])
def test_request_body_with_content_type_is_ok(header: str) -> None:
    assert judge(message(REQUEST, header, b"hello")).kind == "ok"


def test_empty_body_needs_no_content_type() -> None:
    assert judge(message(REQUEST, "", b"")).kind == "ok"


def test_body_of_only_line_breaks_is_still_a_body() -> None:
    # Content-Length says these octets are the body: RFC 3261 §20.15 applies.
    assert judge(message(REQUEST, "", b"\r\n\r\n")).status == 400


def test_missing_mandatory_header_is_reported_first() -> None:
    data = message(REQUEST.replace("To: <sip:bob@example.test>\r\n", ""), "", b"hello")
    assert judge(data).reason == "missing To header"


def test_response_body_without_content_type_is_refused() -> None:
    resp = parse_message(message(RESPONSE, "", b"v=0\r\n"))
    assert isinstance(resp, Response)
    with pytest.raises(RemoteProtocolError) as caught:
        check_response(resp)
    assert caught.value.status == 400
    ok = parse_message(message(RESPONSE, "Content-Type: application/sdp\r\n", b"v=0\r\n"))
    assert isinstance(ok, Response)
    check_response(ok)
