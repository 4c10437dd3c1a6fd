"""An Enterprise pool: two Front Ends share registrations and presence (docs/pools.md).

alice signs in at fe1 and bob at fe2; every request crosses from one member to
the other over mutual TLS, and each member's presence watchers see what was
published at the other.
"""

from __future__ import annotations

from .edge_deployment import DOMAIN, send_message, sign_in
from .pool_deployment import PoolDeployment, knows, pool

__all__ = ["pool"]


def test_messages_cross_between_members(pool: PoolDeployment) -> None:
    alice, bob = pool.client("fe1"), pool.client("fe2")
    assert sign_in(alice, "alice").status == 200
    assert sign_in(bob, "bob").status == 200
    knows(pool.processes["fe1"], f"sip:bob@{DOMAIN}", "fe2")
    knows(pool.processes["fe2"], f"sip:alice@{DOMAIN}", "fe1")
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
