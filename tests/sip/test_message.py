"""Tests for conclave.sip.message: typed views parsed once, and never stale."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conclave.sip.address import SharedNameAddr, parse_name_addr
from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.fields import CSeq, SharedVia, Via, check_via, parse_via
from conclave.sip.headers import Headers
from conclave.sip.message import Request, Response, make_response
from conclave.sip.params import Params
from conclave.sip.parser import parse_message
from conclave.sip.uri import parse_uri

from .torture import load_cases

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP proxy.example.com:5060;branch=z9hG4bKp1\r\n"
    b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;rport\r\n"
    b"Max-Forwards: 69\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b'From: "Alice" <sip:Alice@Atlanta.Example.com>;tag=9fxced76sl\r\n'
    b"To: Bob <sips:bob@biloxi.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _invite() -> Request:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    return message


def test_the_views_of_a_parsed_request() -> None:
    req = _invite()
    assert isinstance(req.top_via, SharedVia)
    assert req.top_via.branch == "z9hG4bKp1" and req.top_via.transport == "TCP"
    assert [v.host for v in req.vias] == ["proxy.example.com", "client.atlanta.example.com"]
    assert isinstance(req.from_addr, SharedNameAddr) and req.from_addr.display_name == "Alice"
    assert (req.from_tag, req.to_tag) == ("9fxced76sl", None)
    assert req.from_aor == "sip:Alice@atlanta.example.com"
    assert req.to_aor == "sip:bob@biloxi.example.com"  # sips maps to sip
    assert req.cseq == CSeq(1, "INVITE")
    assert req.call_id == "3848276298220188511@atlanta.example.com"
    assert [str(r.uri) for r in req.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    [contact] = req.contacts
    assert contact is not None and str(contact.uri).endswith("transport=tcp")
    assert req.max_forwards == 69


def test_views_are_parsed_once_and_shared() -> None:
    req = _invite()
    for name in ("top_via", "from_addr", "to_addr", "cseq", "contacts", "routes"):
        assert getattr(req, name) is getattr(req, name), name
    assert all(a is b for a, b in zip(req.vias, req.vias, strict=True))  # the shared memo
    # The same value in another message is the same shared, read-only object.
    assert _invite().from_addr is req.from_addr
    with pytest.raises(FrozenInstanceError):
        req.from_addr.params.set("tag", "forged")
    with pytest.raises(FrozenInstanceError):
        req.top_via.params.set("received", "192.0.2.1")


def test_absent_headers() -> None:
    req = Request("OPTIONS", parse_uri("sip:h"), Headers())
    for name in ("top_via", "from_addr", "to_addr", "from_tag", "to_tag", "cseq"):
        with pytest.raises(RemoteProtocolError, match="missing"):
            getattr(req, name)
    assert (req.vias, req.contacts, req.routes) == ((), (), ())
    assert (req.max_forwards, req.call_id, req.from_aor, req.to_aor) == (None, None, None, None)


def test_malformed_headers_raise_400_each_time() -> None:
    req = Request("OPTIONS", parse_uri("sip:h"), Headers([("To", "<sip:a@b"), ("CSeq", "x")]))
    for _ in range(2):  # an error is not kept
        with pytest.raises(RemoteProtocolError) as info:
            _ = req.to_addr
        assert info.value.status == 400
    assert req.to_aor is None
    with pytest.raises(RemoteProtocolError):
        _ = req.cseq
    req.headers.set("To", "<sip:a@b>;tag=1")
    assert req.to_tag == "1"


# --- a proxy's edits drop exactly the views they change ----------------------------


def test_a_proxy_forwarding_sees_its_own_edits() -> None:
    req = _invite()
    old_from, old_cseq = req.from_addr, req.cseq
    assert req.top_via.branch == "z9hG4bKp1" and req.max_forwards == 69
    # RFC 3261 §16.6: copy, set Max-Forwards, push our Via and Record-Route,
    # pop the Route that named us (§16.4).
    out = Request(req.method, req.uri, req.headers.copy(), req.body)
    out.headers.set("Max-Forwards", str((out.max_forwards or 70) - 1))
    out.headers.prepend("Via", "SIP/2.0/UDP us.example.com;branch=z9hG4bKus")
    out.headers.pop_first("Route")
    assert out.max_forwards == 68 and out.top_via.branch == "z9hG4bKus"
    assert len(out.vias) == 3 and [str(r.uri) for r in out.routes] == ["sip:p2.example.com;lr"]
    assert out.from_addr is old_from and out.cseq is old_cseq  # carried over, still right
    # The original is untouched.
    assert req.max_forwards == 69 and req.top_via.branch == "z9hG4bKp1" and len(req.routes) == 2


def test_a_server_stamping_received_replaces_the_top_via_view() -> None:
    req = _invite()
    assert req.top_via.received is None
    via = parse_via(req.headers.get("Via") or "")  # fresh, to change (RFC 3261 §18.2.1)
    via.params.set("received", "192.0.2.7")
    req.headers.replace_first("Via", str(via))
    assert req.top_via.received == "192.0.2.7"


def test_replace_top_via_makes_the_stamped_via_the_view() -> None:
    req = _invite()
    via = req.top_via.copy()
    via.params.set("received", "192.0.2.7")
    via.params.set("rport", "5070")
    req.replace_top_via(via)
    assert req.top_via == via and req.top_via is not via  # a read-only copy
    assert req.top_via == parse_via(req.headers.get("Via") or "")  # what a parse gives
    assert len(req.vias) == 2 and req.vias[0] is req.top_via
    via.params.set("received", "192.0.2.8")  # the caller's copy stays the caller's
    assert req.top_via.received == "192.0.2.7"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda v: setattr(v, "transport", "udp"),  # parse_via upper-cases it
        lambda v: setattr(v, "host", "bad host"),
        lambda v: setattr(v, "port", 70000),
        lambda v: setattr(v, "protocol", "SIP"),
        lambda v: v.params.set("received", "not-an-address"),
        lambda v: v.params.set("rport", "99999"),
        lambda v: v.params.set("ttl", "256"),
    ],
)
def test_replace_top_via_refuses_a_via_that_would_not_parse_back(
    spoil: Callable[[Via], object],
) -> None:
    req = _invite()
    via = req.top_via.copy()
    spoil(via)
    with pytest.raises(LocalProtocolError):
        req.replace_top_via(via)
    assert req.top_via.branch == "z9hG4bKp1"  # nothing written


@given(
    st.sampled_from(["UDP", "TCP", "TLS", "WSS", "SCTP"]),
    st.sampled_from(["a.example.com", "192.0.2.1", "[2001:db8::1]", "h"]),
    st.one_of(st.none(), st.integers(0, 65535)),
    st.lists(
        st.sampled_from(
            [
                ("branch", "z9hG4bKx"),
                ("rport", None),
                ("rport", "5060"),
                ("received", "192.0.2.9"),
                ("received", "[2001:db8::9]"),
                ("ttl", "16"),
                ("maddr", "239.255.255.1"),
                ("x-flag", None),
            ]
        ),
        max_size=4,
        unique_by=lambda p: p[0],
    ),
)
def test_check_via_accepts_what_parses_back(
    transport: str, host: str, port: int | None, params: list[tuple[str, str | None]]
) -> None:
    via = Via(transport, host, port, Params(params))
    check_via(via)
    assert parse_via(str(via)) == via


def test_make_response_reads_the_to_tag_view() -> None:
    req = _invite()
    resp = make_response(req, 180, to_tag="abc")
    assert resp.to_tag == "abc" and resp.from_tag == req.from_tag and resp.cseq == req.cseq
    tagged = make_response(resp_request(req), 200, to_tag="other")
    assert tagged.to_tag == "abc"  # already tagged: kept (§8.2.6.2)


def resp_request(req: Request) -> Request:
    headers = req.headers.copy()
    headers.set("To", str(make_response(req, 180, to_tag="abc").to_addr))
    return Request(req.method, req.uri, headers)


def test_response_views() -> None:
    resp = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
        b"Call-ID: c\r\nCSeq: 7 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(resp, Response)
    assert (resp.top_via.branch, resp.to_tag, resp.cseq.method) == ("z9hG4bK1", "2", "MESSAGE")


# --- property: whatever edits are made, every view equals a fresh parse ------------

_VALUES: dict[str, list[str]] = {
    "Via": [
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2;rport",
        "SIP/2.0/TLS [2001:db8::1];branch=z9hG4bK3;received=192.0.2.1",
    ],
    "From": ["<sip:a@example.com>;tag=1", '"A" <sip:a@example.com>', "sip:x@y;tag=2"],
    "To": ["<sip:b@example.com>", "<sips:b@example.com>;tag=9", "<tel:+12>"],
    "CSeq": ["1 INVITE", "2 BYE", "314159 MESSAGE"],
    "Contact": ["<sip:a@192.0.2.1:5060>", "*", "<sip:b@h>;expires=60"],
    "Route": ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
    "Max-Forwards": ["70", "0", "12"],
    "Call-ID": ["c1", "c2@h"],
}
_NAMES = st.sampled_from(sorted(_VALUES))
_EDITS = st.one_of(
    st.tuples(st.just("add"), _NAMES, st.integers(0, 2)),
    st.tuples(st.just("prepend"), _NAMES, st.integers(0, 2)),
    st.tuples(st.just("set"), _NAMES, st.integers(0, 2)),
    st.tuples(st.just("replace_first"), _NAMES, st.integers(0, 2)),
    st.tuples(st.just("remove"), _NAMES, st.just(0)),
    st.tuples(st.just("pop_first"), _NAMES, st.just(0)),
    st.tuples(st.just("copy"), _NAMES, st.just(0)),
)
_VIEWS = (
    "vias",
    "top_via",
    "from_addr",
    "to_addr",
    "from_tag",
    "to_tag",
    "from_aor",
    "to_aor",
    "cseq",
    "call_id",
    "contacts",
    "routes",
    "max_forwards",
)


def _read(message: Request | Response, view: str) -> object:
    try:
        return getattr(message, view)
    except RemoteProtocolError as exc:
        return ("error", exc.reason)


def _apply(req: Request, edit: tuple[str, str, int]) -> Request:
    verb, name, index = edit
    values = _VALUES[name]
    value = values[index % len(values)]
    if verb == "copy":
        return Request(req.method, req.uri, req.headers.copy(), req.body)
    change: Callable[..., object] = getattr(req.headers, verb)
    if verb in ("remove", "pop_first"):
        change(name)
    else:
        change(name, value)
    return req


@settings(max_examples=300)
@given(st.lists(st.sampled_from(_VIEWS), max_size=4), st.lists(_EDITS, max_size=12))
def test_views_are_never_stale(warm: list[str], edits: list[tuple[str, str, int]]) -> None:
    req = _invite()
    for view in warm:
        _read(req, view)
    for edit in edits:
        req = _apply(req, edit)
        for view in _VIEWS:  # read some views between edits, so that they are cached
            if hash((view, edit)) % 3 == 0:
                _read(req, view)
        fresh = Request(req.method, req.uri, Headers(list(req.headers)))
        for view in _VIEWS:
            assert _read(req, view) == _read(fresh, view), (view, edit)


def test_views_match_the_parsers_on_the_torture_messages() -> None:
    for case in load_cases():
        try:
            message = parse_message(case.path.read_bytes(), datagram=True)
        except RemoteProtocolError:
            continue
        from_value = message.headers.get("From")
        if from_value is not None:
            assert message.from_addr == parse_name_addr(from_value)
        if message.headers.get("Via") is not None:
            assert message.top_via == parse_via(message.headers.get("Via") or "")


def _fresh_views(message: Request | Response) -> list[object]:
    if isinstance(message, Request):
        fresh: Request | Response = Request(
            message.method, message.uri, Headers(list(message.headers))
        )
    else:
        fresh = Response(message.status, message.reason, Headers(list(message.headers)))
    return [_read(fresh, view) for view in _VIEWS]


@pytest.mark.parametrize("status", [100, 180, 200, 401, 486])
@pytest.mark.parametrize("to_tag", [None, "abc123", "weird tag"])
def test_responses_start_with_views_equal_to_a_fresh_parse(status: int, to_tag: str | None) -> None:
    for case in load_cases():
        try:
            request = parse_message(case.path.read_bytes(), datagram=True)
        except RemoteProtocolError:
            continue
        if not isinstance(request, Request):
            continue
        for view in _VIEWS:
            _read(request, view)  # computed, so the response may take them over
        try:
            response = make_response(request, status, to_tag=to_tag)
        except (RemoteProtocolError, LocalProtocolError):
            continue
        seen = [_read(response, view) for view in _VIEWS]
        assert seen == _fresh_views(response), case.name
