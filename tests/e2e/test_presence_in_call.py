""" "In a call" is set automatically while a user's device has an established call."""

from __future__ import annotations

from collections.abc import Callable

from conclave.sip.address import parse_name_addr

from .server import ConclaveServer
from .test_calls import answer, in_dialog, invite
from .test_im import signed_in
from .test_presence import FAST, Peer, Subscription, pidf


def test_in_a_call_follows_the_call(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=FAST)
    bob_phone = signed_in(server, "bob")  # the device that takes the call
    bob = Peer(server, "bob")
    bob.publish(pidf("bob"))
    carol = Peer(server, "carol")
    Subscription(carol, "sip:bob@localhost")
    assert b"on-the-phone" not in carol.notify().body

    alice = signed_in(server, "alice")
    invite(alice, "presence-call")
    incoming = bob_phone.recv_request()
    answer(bob_phone, incoming, 200, "bobtag")
    ok = alice.final()
    assert ok.status == 200
    assert b"on-the-phone" in carol.notify().body  # In a call

    target = str(parse_name_addr(ok.headers.get("Contact") or "").uri)
    headers = {"from_hdr": ok.headers.get("From") or "", "to_hdr": ok.headers.get("To") or ""}
    alice.send_raw(in_dialog(alice, "ACK", ok, target, call_id="presence-call", cseq=2, **headers))
    assert bob_phone.recv_request().method == "ACK"
    alice.send_raw(in_dialog(alice, "BYE", ok, target, call_id="presence-call", cseq=3, **headers))
    bye = bob_phone.recv_request()
    bob_phone.reply(bye, 200)
    assert alice.final().status == 200
    assert b"on-the-phone" not in carol.notify().body  # back to Available
