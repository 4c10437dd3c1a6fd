"""Remote users through the Access Edge: sign-in, IM and calls, with the inside hidden.

A real deployment on loopback (``edge_deployment``): ``fe1`` and ``edge1`` run
as ``conclave serve`` processes from a provisioned topology. Remote users
connect to the Edge's external address only; internal users to the Front End.
Everything a remote user receives is checked for internal names and addresses.
"""

from __future__ import annotations

import os
import re

from conclave.sip.address import parse_name_addr
from conclave.sip.message import Request, Response, make_response

from .edge_deployment import (
    DOMAIN,
    EDGE_EXTERNAL,
    INTERNAL_NAMES,
    PASSWORDS,
    REMOTE,
    EdgeDeployment,
    edge_deployment,
    send_message,
    sign_in,
)
from .peers_baresip import Baresip
from .sipclient import SipClient, digest_header

__all__ = ["edge_deployment"]

SDP = (
    b"v=0\r\no=u 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def hides_inside(message: Request | Response) -> None:
    """No internal name or address as a name of its own (a hex token that happens to
    hold the letters "fe1" names nothing)."""
    text = message.serialise().decode(errors="replace")
    for name in INTERNAL_NAMES:
        alone = re.compile(rf"(?<![0-9A-Za-z]){re.escape(name)}(?![0-9A-Za-z])")
        assert not alone.search(text), f"{name} leaked to a remote user:\n{text}"


def invite(client: SipClient, user: str, to_user: str, call_id: str) -> None:
    uri = f"sip:{to_user}@{DOMAIN}"
    headers = ["Content-Type: application/sdp"]
    first = client.send("INVITE", uri, from_user=user, call_id=call_id, headers=headers, body=SDP)
    assert first.status == 407, first
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="INVITE", uri=uri)
    client.send_raw(
        client.request(
            "INVITE", uri, from_user=user, call_id=call_id, headers=[*headers, auth], body=SDP
        )
    )


def answer(client: SipClient, request: Request, status: int, tag: str, user: str) -> None:
    response = make_response(request, status, to_tag=tag)
    for entry in request.headers.get_all("Record-Route"):
        response.headers.add("Record-Route", entry)
    response.headers.add("Contact", f"<sip:{user}@{client.host}:{client.local_port};transport=tls>")
    if status == 200:
        response.headers.add("Content-Type", "application/sdp")
        response.body = SDP
    client.send_raw(response.serialise())


def in_dialog(
    client: SipClient, method: str, route: list[str], target: str, dialog: Response, cseq: int,
    *, caller: bool,
) -> bytes:  # fmt: skip
    """A request in the dialog ``dialog`` (the 2xx), from the caller or the callee."""
    ours, theirs = ("From", "To") if caller else ("To", "From")
    lines = [
        f"{method} {target} SIP/2.0",
        f"Via: SIP/2.0/TLS {client.host}:{client.local_port};branch=z9hG4bK{os.urandom(6).hex()}",
        "Max-Forwards: 70",
        *(f"Route: {r}" for r in route),
        f"From: {dialog.headers.get(ours)}",
        f"To: {dialog.headers.get(theirs)}",
        f"Call-ID: {dialog.call_id}",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def final(client: SipClient, *, remote: bool) -> Response:
    while True:
        response = client.recv()
        if remote:
            hides_inside(response)
        if response.status >= 200:
            return response


def test_remote_user_signs_in_and_exchanges_messages(edge_deployment: EdgeDeployment) -> None:
    bob = edge_deployment.internal()
    assert sign_in(bob, "bob").status == 200
    alice = edge_deployment.remote()
    registered = sign_in(alice, "alice")
    assert registered.status == 200
    hides_inside(registered)
    assert "Path" not in registered.headers and len(registered.headers.get_all("Via")) == 1

    send_message(alice, "alice", "bob", b"hello from outside")
    incoming = bob.recv_request()
    assert incoming.body == b"hello from outside"
    assert parse_name_addr(incoming.headers.get("P-Asserted-Identity") or "").uri.user == "alice"  # type: ignore[union-attr]
    bob.reply(incoming, 200)
    assert final(alice, remote=True).status == 200

    send_message(bob, "bob", "alice", b"hello from inside")
    delivered = alice.recv_request()
    hides_inside(delivered)
    assert delivered.body == b"hello from inside"
    assert len(delivered.headers.get_all("Via")) == 1  # the Edge's only
    alice.reply(delivered, 200)
    assert final(bob, remote=False).status == 200


def test_remote_user_calls_an_internal_user(edge_deployment: EdgeDeployment) -> None:
    bob = edge_deployment.internal()
    assert sign_in(bob, "bob").status == 200
    alice = edge_deployment.remote()
    assert sign_in(alice, "alice").status == 200
    invite(alice, "alice", "bob", "edge-call-1")
    ringing = bob.recv_request()
    assert ringing.method == "INVITE" and ringing.body == SDP
    answer(bob, ringing, 180, "bob1", "bob")
    answer(bob, ringing, 200, "bob1", "bob")
    ok = final(alice, remote=True)
    assert ok.status == 200 and ok.body == SDP
    route = list(reversed(ok.headers.get_all("Record-Route")))
    assert len(route) == 1  # the Edge alone; the Front End's entries are hidden
    target = str(parse_name_addr(ok.headers.get("Contact") or "").uri)
    alice.send_raw(in_dialog(alice, "ACK", route, target, ok, 2, caller=True))
    assert bob.recv_request().method == "ACK"
    # bob hangs up: his BYE crosses the Edge outward, along the hidden dialog.
    bob_route = ringing.headers.get_all("Record-Route")
    alice_contact = str(parse_name_addr(ringing.headers.get("Contact") or "").uri)
    bob.send_raw(in_dialog(bob, "BYE", bob_route, alice_contact, ok, 1, caller=False))
    bye = alice.recv_request()
    hides_inside(bye)
    assert bye.method == "BYE" and bye.call_id == "edge-call-1"
    alice.reply(bye, 200)
    assert final(bob, remote=False).status == 200


def test_internal_user_calls_a_remote_user(edge_deployment: EdgeDeployment) -> None:
    alice = edge_deployment.remote()
    assert sign_in(alice, "alice").status == 200
    bob = edge_deployment.internal()
    assert sign_in(bob, "bob").status == 200
    invite(bob, "bob", "alice", "edge-call-2")
    ringing = alice.recv_request()
    hides_inside(ringing)
    assert ringing.method == "INVITE" and ringing.body == SDP
    assert len(ringing.headers.get_all("Record-Route")) == 1
    answer(alice, ringing, 200, "alice2", "alice")
    ok = final(bob, remote=False)
    assert ok.status == 200
    bob_route = list(reversed(ok.headers.get_all("Record-Route")))
    alice_target = str(parse_name_addr(ok.headers.get("Contact") or "").uri)
    bob.send_raw(in_dialog(bob, "ACK", bob_route, alice_target, ok, 2, caller=True))
    ack = alice.recv_request()
    hides_inside(ack)
    assert ack.method == "ACK"
    # alice hangs up from outside: her route is the Edge's one Record-Route entry.
    route = ringing.headers.get_all("Record-Route")
    bob_contact = str(parse_name_addr(ringing.headers.get("Contact") or "").uri)
    alice.send_raw(in_dialog(alice, "BYE", route, bob_contact, ok, 1, caller=False))
    bye = bob.recv_request()
    assert bye.method == "BYE" and bye.call_id == "edge-call-2"
    bob.reply(bye, 200)
    assert final(alice, remote=True).status == 200


def test_baresip_signs_in_through_the_edge_messages_and_calls(
    edge_deployment: EdgeDeployment,
) -> None:
    """A real client that knows only the Edge's external address and name: it signs in,
    messages and calls an internal user (another baresip on the Front End)."""
    outside = f"sip:{EDGE_EXTERNAL}:{edge_deployment.access_port};transport=tls"
    inside = f"sip:127.0.0.1:{edge_deployment.fe_port};transport=tls"
    with (
        Baresip(f"sip:alice@{DOMAIN}", password=PASSWORDS["alice"], outbound=outside,
                ca_file=edge_deployment.ca, contacts=[f"sip:bob@{DOMAIN}"],
                sip_listen=f"{REMOTE}:0", name="remote alice") as alice,
        Baresip(f"sip:bob@{DOMAIN}", password=PASSWORDS["bob"], outbound=inside,
                ca_file=edge_deployment.ca, contacts=[f"sip:alice@{DOMAIN}"],
                name="internal bob") as bob,
    ):  # fmt: skip
        alice.wait_registered(timeout=20)
        bob.wait_registered(timeout=20)
        alice.send_message(f"sip:bob@{DOMAIN}", "hello from the internet")
        assert "hello from the internet" in bob.wait_message(timeout=20)
        bob.send_message(f"sip:alice@{DOMAIN}", "hello from the office")
        assert "hello from the office" in alice.wait_message(timeout=20)
        alice.dial(f"sip:bob@{DOMAIN}")
        bob.wait_call_incoming(timeout=20)
        bob.accept()
        alice.wait_call_established(timeout=20)
        bob.wait_call_established(timeout=20)
        alice.hangup()
        bob.wait_call_closed(timeout=20)


def test_a_remote_user_who_left_gets_the_message_later(edge_deployment: EdgeDeployment) -> None:
    """carol signs in through the Edge and drops her connection. bob's message to her gets
    430 Flow Failed at the Edge (RFC 5626 §5.3): the Front End forgets that binding and
    stores the message as for anyone offline (202); carol gets it when she is back."""
    carol = edge_deployment.remote("127.0.0.24")
    assert sign_in(carol, "carol").status == 200
    carol.close()
    bob = edge_deployment.internal()
    assert sign_in(bob, "bob").status == 200
    fe1 = next(p for p in edge_deployment.processes if "fe1" in p.args)
    send_message(bob, "bob", "carol", b"while you were away")
    assert final(bob, remote=False).status == 202
    fe1.wait_for(lambda e: e.get("event") == "binding removed: flow failed", 10)
    back = edge_deployment.remote("127.0.0.24")
    assert sign_in(back, "carol").status == 200
    delivered = back.recv_request()
    hides_inside(delivered)
    assert delivered.body == b"while you were away"
    back.reply(delivered, 200)
