"""Best-response selection (RFC 3261 §16.7) and the local endpoint's Record-Route."""

from __future__ import annotations

import pytest

from conclave.core.proxy import choose_best
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response
from conclave.sip.uri import parse_uri


def resp(status: int, *headers: tuple[str, str]) -> Response:
    return Response(status, "x", Headers(headers))


@pytest.mark.parametrize(
    ("statuses", "best"),
    [
        ([486, 603, 200], 603),
        ([480, 200], 200),
        ([408, 486], 486),
        ([503, 404], 404),
        ([500, 302], 302),
        ([408, 480], 480),
        ([503], 503),
    ],
)
def test_choose_best(statuses: list[int], best: int) -> None:
    assert choose_best([resp(s) for s in statuses]).status == best


def test_challenges_are_merged() -> None:
    merged = choose_best(
        [resp(401, ("WWW-Authenticate", "Digest a")), resp(407, ("Proxy-Authenticate", "Digest b"))]
    )
    assert merged.headers.get_all("WWW-Authenticate") == ["Digest a"]
    assert merged.headers.get_all("Proxy-Authenticate") == ["Digest b"]


def test_record_route_is_me_and_carries_the_dialog_id() -> None:
    local = LocalEndpoint(host="127.0.0.1", domain="example.test", ports={"tls": 5061})
    a = Flow("tls", ("127.0.0.1", 40000), ("127.0.0.1", 5061), 1)
    rr = local.record_route(a, "Zm9vYmFyYmF6cXV4MTIzNA")
    uri = parse_uri(rr.strip("<>"))
    assert local.is_me(uri)
    assert uri.user == "Zm9vYmFyYmF6cXV4MTIzNA"  # type: ignore[union-attr]
    assert not local.is_me(parse_uri("sip:127.0.0.1:5999;lr"))
    assert not local.is_me(parse_uri("sip:elsewhere.test;lr"))


def _request(uri: str = "sip:bob@example.test") -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bKa")
    h.add("From", "<sip:alice@example.test>;tag=1")
    h.add("To", "<sip:bob@example.test>")
    h.add("Call-ID", "c")
    h.add("CSeq", "1 MESSAGE")
    h.add("Max-Forwards", "70")
    return Request("MESSAGE", parse_uri(uri), h)


def test_loop_is_detected_but_a_spiral_is_not() -> None:
    from conclave.core.dialogs import DialogTable
    from conclave.core.proxy import Proxy, Target

    local = LocalEndpoint(host="127.0.0.1", domain="example.test", ports={"tls": 5061})
    proxy = Proxy(stack=None, local=local, dialogs=DialogTable())  # type: ignore[arg-type]
    inbound = Flow("tls", ("127.0.0.1", 40000), ("127.0.0.1", 5061), 1)
    original = _request()
    assert not proxy.is_loop(original)
    # The same request forwarded by us to ourselves, unchanged: a loop.
    sender = "sip:alice@example.test"
    looped = proxy._branch_request(original, Target(original.uri, inbound), inbound, sender, None)
    looped.uri = original.uri
    assert proxy.is_loop(looped)
    # Forwarded with a new Request-URI (retargeted): a spiral, which is legal.
    spiral = proxy._branch_request(
        original, Target(parse_uri("sip:bob@127.0.0.1:40001"), inbound), inbound, sender, None
    )
    assert not proxy.is_loop(spiral)


def test_an_ipv6_host_is_bracketed_on_the_wire() -> None:
    from conclave.sip.fields import parse_via

    local = LocalEndpoint(host="::1", domain="example.test", ports={"tls": 5061})
    flow = Flow("tls", ("::1", 4), ("::1", 5061), 1)
    via = parse_via(local.via(flow, "z9hG4bKx"))
    assert local.is_own_via(via.host, via.port)
    rr = parse_uri(local.record_route(flow, "tok").strip("<>"))
    assert local.is_me(rr) and local.is_my_host(rr)


def test_every_name_the_server_answers_for_is_itself() -> None:
    # A client that verifies our certificate by name (Linphone) routes through
    # sip.<domain> or another name on it, often with maddr: that Route is ours.
    local = LocalEndpoint(
        host="127.0.0.1", domain="example.test", ports={"tls": 5061}, names={"sip.example.test"}
    )
    for route in (
        "sip:sip.example.test:5061;transport=tls;maddr=127.0.0.1;lr",
        "sip:example.test;transport=tls;lr",
        "sip:127.0.0.1:5061;transport=tls;lr",
    ):
        assert local.is_me(parse_uri(route)), route
    assert not local.is_me(parse_uri("sip:other.example.test:5061;transport=tls;lr"))
    assert local.is_my_host(parse_uri("sip:sip.example.test"))


def test_a_client_is_given_us_as_it_reaches_us() -> None:
    # Linphone reaches us by name with maddr (it verifies the certificate by
    # name and has no DNS entry): our Via, Record-Route and Contact toward it
    # say the same, so it stays on the connection it has.
    from conclave.sip.fields import parse_via

    local = LocalEndpoint(
        host="127.0.0.1", domain="example.test", ports={"tls": 5061}, names={"sip.example.test"}
    )
    linphone = Flow("tls", ("127.0.0.1", 40000), ("127.0.0.1", 5061), 1)
    other = Flow("tls", ("127.0.0.1", 40001), ("127.0.0.1", 5061), 2)
    local.remember_reach(
        linphone, parse_uri("sip:sip.example.test:5061;transport=tls;maddr=127.0.0.1;lr")
    )
    via = parse_via(local.via(linphone, "z9hG4bKx"))
    assert (via.host, via.port, via.params.get("maddr")) == ("sip.example.test", 5061, "127.0.0.1")
    assert local.is_own_via(via.host, via.port)
    rr = parse_uri(local.record_route(linphone, "tok").strip("<>"))
    assert rr.host == "sip.example.test" and rr.params.get("maddr") == "127.0.0.1"  # type: ignore[union-attr]
    assert local.is_me(rr)
    # Another client gets our host; a forgotten flow too.
    assert parse_uri(local.record_route(other, "tok").strip("<>")).host == "127.0.0.1"  # type: ignore[union-attr]
    local.forget_reach(linphone)
    assert local.reach(linphone) == "127.0.0.1:5061;transport=tls"
