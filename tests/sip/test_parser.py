"""Tables of raw bytes -> parsed fields or verdict, one row per grammar point."""

from __future__ import annotations

import pytest

from conclave.sip.address import parse_name_addr
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.fields import parse_cseq, parse_via
from conclave.sip.lint import judge
from conclave.sip.message import Request, Response
from conclave.sip.parser import parse_message
from conclave.sip.uri import SipURI

BASE = [
    "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: <sip:bob@example.com>",
    "From: Alice <sip:alice@example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.example.com",
    "CSeq: 314159 INVITE",
]


def request(*extra: str, start: str = "INVITE sip:bob@example.com SIP/2.0", base=BASE, body=b""):  # type: ignore[no-untyped-def]
    lines = [start, *base, *extra]
    if not any(x.lower().startswith(("content-length", "l:")) for x in extra):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_req(data: bytes, datagram: bool = True) -> Request:
    msg = parse_message(data, datagram=datagram)
    assert isinstance(msg, Request)
    return msg


def test_minimal_request_fields() -> None:
    req = parse_req(request())
    assert req.method == "INVITE"
    assert isinstance(req.uri, SipURI) and req.uri.user == "bob"
    assert req.call_id == "a84b4c76e66710@pc33.example.com"
    assert parse_cseq(req.headers.get("CSeq") or "").seq == 314159
    assert parse_name_addr(req.headers.get("From") or "").tag == "1928301774"


def test_line_folding_is_one_space() -> None:
    req = parse_req(request("Subject: I know you're there,\r\n   pick up the phone\r\n\tplease"))
    assert req.headers.get("Subject") == "I know you're there, pick up the phone please"


def test_lws_around_colon() -> None:
    req = parse_req(request("Subject   :   hi there  "))
    assert req.headers.get("Subject") == "hi there"


def test_comma_lists_split_but_not_inside_quotes_or_angles() -> None:
    req = parse_req(
        request(
            'Contact: "Doe, John" <sip:j,x@h.example.com;x=a>, <sip:k@h.example.com>',
            "Supported: path, outbound ,gruu",
        )
    )
    contacts = req.headers.get_all("Contact")
    assert contacts == ['"Doe, John" <sip:j,x@h.example.com;x=a>', "<sip:k@h.example.com>"]
    assert req.headers.get_all("Supported") == ["path", "outbound", "gruu"]
    assert parse_name_addr(contacts[0]).display_name == "Doe, John"


def test_quoted_string_escapes() -> None:
    req = parse_req(
        request(
            start="OPTIONS sip:bob@example.com SIP/2.0",
            base=[
                *BASE[:3],
                'From: "A \\"quoted\\" \\\\ name" <sip:a@example.com>;tag=1',
                *BASE[4:5],
                "CSeq: 1 OPTIONS",
            ],
        )
    )
    assert parse_name_addr(req.headers.get("From") or "").display_name == 'A "quoted" \\ name'


def test_percent_escapes_decoded_once() -> None:
    req = parse_req(request(start="INVITE sip:sips%3Auser%2540example.com@example.net SIP/2.0"))
    assert isinstance(req.uri, SipURI)
    assert req.uri.user == "sips:user%40example.com"


def test_ipv6_reference_in_uri_and_via() -> None:
    data = request(
        start="INVITE sip:bob@[2001:db8::10]:5070 SIP/2.0",
        base=[
            "Via: SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3;received=[2001:db8::9:255]",
            *BASE[1:],
        ],
    )
    req = parse_req(data)
    assert isinstance(req.uri, SipURI)
    assert req.uri.host.lower() == "[2001:db8::10]" and req.uri.port == 5070
    via = parse_via(req.headers.get("Via") or "")
    assert via.host == "[2001:db8::9:1]" and via.port == 5060


def test_utf8_in_display_name_and_reason() -> None:
    req = parse_req(
        request(
            start="OPTIONS sip:bob@example.com SIP/2.0",
            base=[
                *BASE[:3],
                '"Jörg Ünal" <sip:j@example.com>;tag=1'.join(["From: ", ""]),
                *BASE[4:5],
                "CSeq: 1 OPTIONS",
            ],
        )
    )
    assert parse_name_addr(req.headers.get("From") or "").display_name == "Jörg Ünal"
    resp = parse_message("SIP/2.0 200 Très bien\r\n\r\n".encode())
    assert isinstance(resp, Response) and resp.reason == "Très bien"


def test_binary_body_kept() -> None:
    body = bytes(range(256)) + b"\r\n\r\n\x00"
    req = parse_req(request("Content-Type: application/octet-stream", body=body))
    assert req.body == body
    assert parse_message(req.serialise()) == req


def test_unknown_method_header_param_scheme_transport_preserved() -> None:
    data = request(
        "X-Weird: ;;==  stuff",
        start="FROB sip:bob@example.com;newparam=1 SIP/2.0",
        base=["Via: SIP/2.0/FOO host.example.com;branch=z9hG4bKx;odd", *BASE[1:5], "CSeq: 1 FROB"],
    )
    req = parse_req(data)
    assert req.method == "FROB"
    assert req.headers.get("x-weird") == ";;==  stuff"
    assert isinstance(req.uri, SipURI) and req.uri.params.get("newparam") == "1"
    assert parse_via(req.headers.get("Via") or "").transport == "FOO"
    assert judge(data).kind == "ok"
    assert parse_message(req.serialise()) == req


def test_unknown_scheme_in_header_preserved() -> None:
    req = parse_req(
        request(
            start="OPTIONS sip:bob@example.com SIP/2.0",
            base=[*BASE[:2], "To: isbn:2983792873", *BASE[3:5], "CSeq: 1 OPTIONS"],
        )
    )
    assert str(parse_name_addr(req.headers.get("To") or "").uri) == "isbn:2983792873"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"INVITE  sip:bob@example.com SIP/2.0\r\n\r\n", 400),  # double SP
        (b"INVITE sip:bob@example.com SIP/2.0 \r\n\r\n", 400),  # trailing SP
        (b"INVITE sip:bob@example.com\r\n\r\n", 400),  # no version
        (b"INVITE <sip:bob@example.com> SIP/2.0\r\n\r\n", 400),
        (b"SIP/2.0 1000 Big\r\n\r\n", 400),
        (b"SIP/2.0 099 Small\r\n\r\n", 400),
        (b"SIP/2.0 700 Big\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\n\r\n", 400),
        (b"\x00\x01\x02", 400),
        (b"", 400),
    ],
)
def test_start_line_strictness(data: bytes, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(data)
    assert exc.value.status == status


def test_status_codes_at_the_edges() -> None:
    for code in (100, 699):
        msg = parse_message(f"SIP/2.0 {code} X\r\n\r\n".encode())
        assert isinstance(msg, Response) and msg.status == code


def test_other_version_is_505() -> None:
    data = request(start="INVITE sip:bob@example.com SIP/3.0")
    assert parse_req(data).version == "SIP/3.0"
    verdict = judge(data)
    assert (verdict.kind, verdict.status) == ("reject", 505)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("CSeq: 2147483647 INVITE", True),
        ("CSeq: 2147483648 INVITE", False),
        ("CSeq: -1 INVITE", False),
        ("CSeq: 1INVITE", False),
        ("CSeq: 00001 INVITE", True),
    ],
)
def test_cseq_limits(header: str, ok: bool) -> None:
    data = request(base=[*BASE[:5], header])
    if ok:
        parse_req(data)
    else:
        with pytest.raises(RemoteProtocolError):
            parse_req(data)


@pytest.mark.parametrize(
    ("value", "ok"), [("255", True), ("256", False), ("0", True), ("x", False)]
)
def test_max_forwards_limits(value: str, ok: bool) -> None:
    data = request(base=[BASE[0], f"Max-Forwards: {value}", *BASE[2:]])
    if ok:
        parse_req(data)
    else:
        with pytest.raises(RemoteProtocolError):
            parse_req(data)


@pytest.mark.parametrize(
    "dup",
    [
        "Call-ID: other@x",
        "To: <sip:carol@example.com>",
        "From: <sip:eve@example.com>;tag=9",
        "CSeq: 2 INVITE",
        "Max-Forwards: 10",
        "Content-Type: text/plain",
    ],
)
def test_single_headers_exactly_once(dup: str) -> None:
    extra = [dup] if not dup.startswith("Content-Type") else [dup, dup]
    with pytest.raises(RemoteProtocolError) as exc:
        parse_req(request(*extra))
    assert "more than one" in exc.value.reason


def test_two_content_lengths_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_req(request("Content-Length: 0", "l: 0"))


def test_cseq_method_must_match() -> None:
    verdict = judge(request(base=[*BASE[:5], "CSeq: 1 OPTIONS"]))
    assert (verdict.kind, verdict.status) == ("reject", 400)


def test_datagram_content_length_rules() -> None:
    short = request("Content-Length: 10", body=b"abc")
    with pytest.raises(RemoteProtocolError):
        parse_req(short)
    longer = request("Content-Length: 3", body=b"abcdef")
    assert parse_req(longer).body == b"abc"
    # Stream semantics: the frame must be exact.
    with pytest.raises(RemoteProtocolError):
        parse_req(longer, datagram=False)
    no_length = (
        "\r\n".join(["OPTIONS sip:a@b SIP/2.0", *BASE[:5], "CSeq: 1 OPTIONS"]) + "\r\n\r\nxyz"
    ).encode()
    assert parse_req(no_length).body == b"xyz"
    with pytest.raises(RemoteProtocolError):
        parse_req(no_length, datagram=False)


def test_negative_content_length() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_req(request("Content-Length: -5"))


def test_name_addr_required_when_ambiguous() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_req(request("Contact: sip:user@example.com?Route=%3Csip:x%3E"))
    req = parse_req(request("Contact: <sip:user@example.com?Route=%3Csip:x%3E>"))
    assert req.headers.get("Contact") == "<sip:user@example.com?Route=%3Csip:x%3E>"


def test_missing_required_header_rejected_not_malformed() -> None:
    verdict = judge(request(base=BASE[:4] + BASE[5:]))
    assert (verdict.kind, verdict.status) == ("reject", 400)
    assert "Call-ID" in verdict.reason


def test_require_and_proxy_require() -> None:
    verdict = judge(request("Proxy-Require: foo, bar"))
    assert (verdict.kind, verdict.status) == ("reject", 420)
    verdict = judge(request("Require: 100rel"))
    assert (verdict.kind, verdict.status) == ("reject", 420)


def test_unsupported_scheme_416() -> None:
    verdict = judge(request(start="INVITE mailto:bob@example.com SIP/2.0"))
    assert (verdict.kind, verdict.status) == ("reject", 416)


def test_empty_list_element_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_req(request("Supported: a,,b"))
    assert parse_req(request("Supported:")).headers.get("Supported") == ""


def test_bare_lf_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_req(request("Subject: a\nb"))


def test_leading_crlf_ignored() -> None:
    assert parse_req(b"\r\n\r\n" + request()).method == "INVITE"


def test_oversized_message_is_513() -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(request(body=b"x" * 70000))
    assert exc.value.status == 513


def test_too_many_headers() -> None:
    many = [f"X-H{i}: v" for i in range(400)]
    with pytest.raises(RemoteProtocolError):
        parse_req(request(*many))


def test_serialise_roundtrip_and_content_length_always_true() -> None:
    req = parse_req(request("Content-Type: text/plain", body=b"hello"))
    req.body = b"hello, world"
    again = parse_req(req.serialise())
    assert again.body == b"hello, world"
    assert again.headers.get("Content-Length") == "12"
