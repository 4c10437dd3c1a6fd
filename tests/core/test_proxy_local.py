"""Best-response selection (RFC 3261 §16.7) and the local endpoint's flow tokens."""

from __future__ import annotations

import pytest

from conclave.core.local import LocalEndpoint
from conclave.core.proxy import choose_best
from conclave.sip.headers import Headers
from conclave.sip.message import Response
from conclave.sip.uri import parse_uri
from conclave.transport.flow import Flow


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


def test_flow_token_round_trip_and_tamper() -> None:
    local = LocalEndpoint(host="127.0.0.1", domain="example.test", ports={"tls": 5061})
    flow = Flow("tls", ("127.0.0.1", 40000), ("127.0.0.1", 5061), 7)
    token = local.flow_token(flow)
    assert local.flow_from_token(token) == flow
    raw, mac = token.rsplit(".", 1)
    assert local.flow_from_token(raw + "." + ("0" * len(mac))) is None
    assert local.flow_from_token("garbage") is None
    assert local.flow_from_token(None) is None
    other = LocalEndpoint(host="127.0.0.1", domain="example.test")
    assert other.flow_from_token(token) is None


def test_record_route_is_me_and_carries_token() -> None:
    local = LocalEndpoint(host="127.0.0.1", domain="example.test", ports={"tls": 5061})
    a = Flow("tls", ("127.0.0.1", 40000), ("127.0.0.1", 5061), 1)
    b = Flow("tls", ("127.0.0.1", 40001), ("127.0.0.1", 5061), 2)
    rr = local.record_route(a, toward=b)
    uri = parse_uri(rr.strip("<>"))
    assert local.is_me(uri)
    assert local.flow_from_token(uri.user) == b  # type: ignore[union-attr]
    assert not local.is_me(parse_uri("sip:127.0.0.1:5999;lr"))
    assert not local.is_me(parse_uri("sip:elsewhere.test;lr"))
