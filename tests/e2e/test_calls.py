"""Calls through the proxy with scripted clients over TLS: setup, teardown, CANCEL."""

from __future__ import annotations

import os
from collections.abc import Callable

from conclave.sip.address import parse_name_addr
from conclave.sip.message import Request, Response

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header
from .test_im import signed_in

SDP = (
    b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(alice: SipClient, call_id: str) -> bytes:
    uri = "sip:bob@localhost"
    first = alice.send(
        "INVITE",
        uri,
        from_user="alice",
        call_id=call_id,
        headers=["Content-Type: application/sdp"],
        body=SDP,
    )
    assert first.status == 407
    # ACK for the 407 is sent by the client transaction in real UAs; send it here.
    auth = digest_header(first, user="alice", password=PASSWORDS["alice"], method="INVITE", uri=uri)
    request = alice.request(
        "INVITE",
        uri,
        from_user="alice",
        call_id=call_id,
        headers=["Content-Type: application/sdp", auth],
        body=SDP,
    )
    alice.send_raw(request)
    return request


def in_dialog(
    client: SipClient,
    method: str,
    response: Response,
    request_uri: str,
    *,
    from_hdr: str,
    to_hdr: str,
    call_id: str,
    cseq: int,
) -> bytes:
    routes = list(reversed(response.headers.get_all("Record-Route")))
    lines = [
        f"{method} {request_uri} SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{client.local_port};branch=z9hG4bK{os.urandom(6).hex()}",
        "Max-Forwards: 70",
        *(f"Route: {r}" for r in routes),
        f"From: {from_hdr}",
        f"To: {to_hdr}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(bob: SipClient, req: Request, status: int, tag: str) -> Response:
    from conclave.sip.message import make_response

    resp = make_response(req, status, to_tag=tag)
    for rr in req.headers.get_all("Record-Route"):
        resp.headers.add("Record-Route", rr)
    resp.headers.add("Contact", f"<sip:bob@127.0.0.1:{bob.local_port};transport=tls>")
    if status == 200:
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = SDP
    bob.send_raw(resp.serialise())
    return resp


def test_call_setup_and_teardown(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")
    invite(alice, "call-1")
    incoming = bob.recv_request()
    assert incoming.method == "INVITE" and incoming.body == SDP  # SDP untouched
    assert len(incoming.headers.get_all("Record-Route")) == 2
    answer(bob, incoming, 180, "bobtag")
    ringing = alice.recv()
    while ringing.status == 100:
        ringing = alice.recv()
    assert ringing.status == 180
    answer(bob, incoming, 200, "bobtag")
    ok = alice.final()
    assert ok.status == 200 and ok.body == SDP
    from_hdr = ok.headers.get("From") or ""
    to_hdr = ok.headers.get("To") or ""
    target = parse_name_addr(ok.headers.get("Contact") or "").uri
    # ACK and BYE travel along the recorded route to bob's connection.
    alice.send_raw(
        in_dialog(
            alice,
            "ACK",
            ok,
            str(target),
            from_hdr=from_hdr,
            to_hdr=to_hdr,
            call_id="call-1",
            cseq=2,
        )
    )
    ack = bob.recv_request()
    assert ack.method == "ACK"
    alice.send_raw(
        in_dialog(
            alice,
            "BYE",
            ok,
            str(target),
            from_hdr=from_hdr,
            to_hdr=to_hdr,
            call_id="call-1",
            cseq=3,
        )
    )
    bye = bob.recv_request()
    assert bye.method == "BYE"
    bob.reply(bye, 200)
    assert alice.final().status == 200


def test_cancel_of_a_ringing_call(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")
    request = invite(alice, "call-2")
    incoming = bob.recv_request()
    answer(bob, incoming, 180, "bobtag")
    ringing = alice.recv()
    while ringing.status == 100:
        ringing = alice.recv()
    assert ringing.status == 180
    # CANCEL: same Request-URI, Call-ID, From, To, CSeq number and top Via (§9.1).
    head = request.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    keep = [h for h in head[1:] if h.split(":")[0] in ("Via", "From", "To", "Call-ID")]
    cseq = next(h for h in head if h.startswith("CSeq:")).split()[1]
    cancel = (
        "\r\n".join(
            [
                "CANCEL sip:bob@localhost SIP/2.0",
                *keep,
                "Max-Forwards: 70",
                f"CSeq: {cseq} CANCEL",
                "Content-Length: 0",
            ]
        )
        + "\r\n\r\n"
    )
    alice.send_raw(cancel.encode())
    got = bob.recv_request()
    assert got.method == "CANCEL"
    bob.reply(got, 200)
    answer(bob, incoming, 487, "bobtag")
    statuses = set()
    while len(statuses & {200, 487}) < 2:
        resp = alice.recv()
        statuses.add(resp.status)
    # bob's side gets the ACK for the 487 from the proxy's client transaction.
    assert bob.recv_request().method == "ACK"


def test_call_to_offline_user_is_480(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    invite(alice, "call-3")
    assert alice.final().status == 480
