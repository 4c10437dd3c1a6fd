"""Negative cases over real sockets: authentication, spoofing, bad input, floods."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from conclave.sip.digest import parse_challenge

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header

REG_URI = "sip:localhost"


def register(client: SipClient, user: str, password: str, **kw: object) -> tuple[int, object]:
    first = client.send(
        "REGISTER", REG_URI, from_user=user, to=f"sip:{user}@localhost", headers=["Expires: 600"]
    )
    assert first.status == 401
    auth = digest_header(first, user=user, password=password, method="REGISTER", uri=REG_URI, **kw)  # type: ignore[arg-type]
    final = client.send(
        "REGISTER",
        REG_URI,
        from_user=user,
        to=f"sip:{user}@localhost",
        headers=["Expires: 600", auth],
    )
    return final.status, final


@pytest.fixture
def udp_server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,udp")


def test_register_succeeds_with_digest(udp_server: ConclaveServer) -> None:
    client = SipClient("udp", udp_server.ports["udp"])
    status, resp = register(client, "alice", PASSWORDS["alice"])
    assert status == 200
    assert "expires=" in (resp.headers.get("Contact") or "")  # type: ignore[attr-defined]


def test_wrong_password_and_unknown_user_get_the_same_answer(udp_server: ConclaveServer) -> None:
    client = SipClient("udp", udp_server.ports["udp"])
    wrong_status, wrong = register(client, "alice", "not-the-password")
    unknown_status, unknown = register(client, "mallory", "whatever-it-is")
    assert wrong_status == unknown_status == 401
    names = lambda r: [n for n, _ in r.headers if n not in ("Via", "From", "To", "Call-ID", "CSeq")]  # noqa: E731
    assert names(wrong) == names(unknown)
    assert wrong.reason == unknown.reason  # type: ignore[attr-defined]
    for resp in (wrong, unknown):
        challenges = [parse_challenge(v) for v in resp.headers.get_all("WWW-Authenticate")]  # type: ignore[attr-defined]
        assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
        assert not any(c.stale for c in challenges)


def test_spoofed_from_is_403(udp_server: ConclaveServer) -> None:
    client = SipClient("udp", udp_server.ports["udp"])
    uri = "sip:bob@localhost"
    first = client.send(
        "MESSAGE", uri, from_user="carol", headers=["Content-Type: text/plain"], body=b"hi"
    )
    assert first.status == 407
    # Alice's credentials, but From claims to be carol.
    auth = digest_header(
        first, user="alice", password=PASSWORDS["alice"], method="MESSAGE", uri=uri
    )
    resp = client.send(
        "MESSAGE", uri, from_user="carol", headers=["Content-Type: text/plain", auth], body=b"hi"
    )
    assert resp.status == 403
    assert "authenticated" in resp.reason


def test_malformed_request_gets_400_with_reason(udp_server: ConclaveServer) -> None:
    client = SipClient("udp", udp_server.ports["udp"])
    bad = client.request("OPTIONS", "sip:localhost", from_user="alice").replace(
        b"CSeq: 1 OPTIONS", b"CSeq: 99999999999 OPTIONS"
    )
    client.send_raw(bad)
    # The answer echoes the bad CSeq, so read it raw rather than parse it.
    status_line = client.recv_raw().split(b"\r\n", 1)[0].decode()
    assert status_line.startswith("SIP/2.0 400 "), status_line
    assert "CSeq" in status_line


def test_unsupported_version_and_scheme(udp_server: ConclaveServer) -> None:
    client = SipClient("udp", udp_server.ports["udp"])
    req = client.request("OPTIONS", "sip:localhost", from_user="alice").replace(
        b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1
    )
    client.send_raw(req)
    assert client.final().status == 505
    assert client.send("OPTIONS", "mailto:a@localhost", from_user="alice").status == 416
    resp = client.send(
        "OPTIONS", "sip:localhost", from_user="alice", headers=["Proxy-Require: frobnicate"]
    )
    assert resp.status == 420
    assert resp.headers.get("Unsupported") == "frobnicate"


def test_oversized_message_refused(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(transports="tls,tcp")
    client = SipClient("tcp", server.ports["tcp"])
    body = b"x" * (70 * 1024)
    client.send_raw(client.request("MESSAGE", "sip:bob@localhost", from_user="alice", body=body))
    with pytest.raises((ConnectionError, OSError)):
        # The framer refuses the size before buffering the body and closes.
        client.recv(timeout=10)
    server.wait_for(lambda e: "framing" in str(e.get("event", "")) or "413" in str(e))


def test_flood_from_one_source_is_banned(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(
        transports="tls,udp", config={"limits": {"requests_per_second": 5, "burst": 10}}
    )
    client = SipClient("udp", server.ports["udp"])
    for _ in range(40):
        client.send_raw(client.request("OPTIONS", "sip:localhost", from_user="alice"))
    server.wait_for(lambda e: e.get("event") == "source banned")
    # Once banned, even a polite request gets no answer.
    fresh = SipClient("udp", server.ports["udp"])
    fresh.send_raw(fresh.request("OPTIONS", "sip:localhost", from_user="alice"))
    with pytest.raises(TimeoutError):
        while True:
            fresh.recv(timeout=2)


def test_expired_nonce_gets_stale(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(
        transports="tls,udp",
        config={"auth": {"nonce_lifetime": "1s"}, "limits": {"requests_per_second": 1000}},
    )
    client = SipClient("udp", server.ports["udp"])
    first = client.send("REGISTER", REG_URI, from_user="alice", to="sip:alice@localhost")
    stale = False
    # Re-use the nonce until it ages out (lifetime 1 s); each round trip is
    # paced by waiting briefly for any stray message, bounded to ~12 s.
    for attempt in range(1, 120):
        with contextlib.suppress(TimeoutError):
            client.recv_raw(timeout=0.1)
        auth = digest_header(
            first,
            user="alice",
            password=PASSWORDS["alice"],
            method="REGISTER",
            uri=REG_URI,
            nc=attempt,
        )
        resp = client.send(
            "REGISTER", REG_URI, from_user="alice", to="sip:alice@localhost", headers=[auth]
        )
        if resp.status == 401:
            challenges = [parse_challenge(v) for v in resp.headers.get_all("WWW-Authenticate")]
            stale = all(c.stale for c in challenges)
            break
        assert resp.status == 200
    assert stale


def test_replayed_nonce_count_is_refused(udp_server: ConclaveServer) -> None:
    client = SipClient("udp", udp_server.ports["udp"])
    first = client.send("REGISTER", REG_URI, from_user="alice", to="sip:alice@localhost")
    auth = digest_header(
        first, user="alice", password=PASSWORDS["alice"], method="REGISTER", uri=REG_URI, nc=1
    )
    ok = client.send(
        "REGISTER", REG_URI, from_user="alice", to="sip:alice@localhost", headers=[auth]
    )
    assert ok.status == 200
    replay = client.send(
        "REGISTER", REG_URI, from_user="alice", to="sip:alice@localhost", headers=[auth]
    )
    assert replay.status == 401
    assert all(parse_challenge(v).stale for v in replay.headers.get_all("WWW-Authenticate"))
