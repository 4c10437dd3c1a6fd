"""An Enterprise pool: two Front Ends share registrations and presence (docs/pools.md).

alice signs in at fe1 and bob at fe2; every request crosses from one member to
the other over mutual TLS, and each member's presence watchers see what was
published at the other.
"""

from __future__ import annotations

import itertools

from conclave.sip.address import parse_name_addr
from conclave.sip.message import Request, Response

from .edge_deployment import DOMAIN, PASSWORDS, send_message, sign_in
from .pool_deployment import PoolDeployment, knows, pool
from .test_edge import SDP, answer, final, in_dialog, invite
from .test_presence import Peer, Subscription, pidf

__all__ = ["pool"]


def test_messages_cross_between_members(pool: PoolDeployment) -> None:
    alice, bob = pool.client("fe1"), pool.client("fe2")
    assert sign_in(alice, "alice").status == 200
    assert sign_in(bob, "bob").status == 200
    knows(pool.processes["fe1"], bob, "bob", "fe2")
    knows(pool.processes["fe2"], alice, "alice", "fe1")
    send_message(alice, "alice", "bob", b"from fe1 to fe2")
    incoming = bob.recv_request()
    assert incoming.body == b"from fe1 to fe2"
    assert incoming.from_aor == f"sip:alice@{DOMAIN}"
    bob.reply(incoming, 200)
    assert alice.final().status == 200
    send_message(bob, "bob", "alice", b"and back")
    back = alice.recv_request()
    assert back.body == b"and back"
    alice.reply(back, 200)
    assert bob.final().status == 200


class PoolPeer(Peer):
    """A presence client (test_presence's) connected to one member of the pool."""

    def __init__(self, pool: PoolDeployment, member: str, user: str) -> None:
        self.client = pool.client(member)
        self.user = user
        self.password = PASSWORDS[user]
        self.domain = DOMAIN
        self.notifies: list[Request] = []
        self.responses: list[Response] = []
        self._cseq = itertools.count(1)


def test_presence_crosses_between_members(pool: PoolDeployment) -> None:
    """carol publishes at fe1; bob watches her from fe2 and sees every change."""
    carol, bob = PoolPeer(pool, "fe1", "carol"), PoolPeer(pool, "fe2", "bob")
    etag = carol.publish(pidf("carol", activity="busy", domain=DOMAIN))
    Subscription(bob, f"sip:carol@{DOMAIN}")
    first = bob.notify()
    if b"<rpid:busy/>" not in first.body:  # fe2 had not heard of the PUBLISH yet
        first = bob.notify()
    assert b"<basic>open</basic>" in first.body and b"<rpid:busy/>" in first.body
    etag = carol.publish(pidf("carol", domain=DOMAIN), etag=etag)
    second = bob.notify()
    assert b"<basic>open</basic>" in second.body and b"busy" not in second.body
    carol.publish(None, etag=etag, expires=0)
    assert b"<basic>closed</basic>" in bob.notify().body


def test_a_call_crosses_between_members(pool: PoolDeployment) -> None:
    """bob (fe2) calls alice (fe1); both members stay on the route, and each party's
    in-dialog requests come back on that party's own connection."""
    alice, bob = pool.client("fe1"), pool.client("fe2")
    assert sign_in(alice, "alice").status == 200
    assert sign_in(bob, "bob").status == 200
    knows(pool.processes["fe2"], alice, "alice", "fe1")
    invite(bob, "bob", "alice", "pool-call-1")
    ringing = alice.recv_request()
    assert ringing.method == "INVITE" and ringing.body == SDP
    assert len(ringing.headers.get_all("Record-Route")) >= 2  # fe1 and fe2
    answer(alice, ringing, 200, "alice1", "alice")
    ok = final(bob, remote=False)
    assert ok.status == 200
    bob_route = list(reversed(ok.headers.get_all("Record-Route")))
    alice_target = str(parse_name_addr(ok.headers.get("Contact") or "").uri)
    bob.send_raw(in_dialog(bob, "ACK", bob_route, alice_target, ok, 2, caller=True))
    assert alice.recv_request().method == "ACK"
    route = ringing.headers.get_all("Record-Route")
    bob_contact = str(parse_name_addr(ringing.headers.get("Contact") or "").uri)
    alice.send_raw(in_dialog(alice, "BYE", route, bob_contact, ok, 1, caller=False))
    bye = bob.recv_request()
    assert bye.method == "BYE" and bye.call_id == "pool-call-1"
    bob.reply(bye, 200)
    assert final(alice, remote=False).status == 200
