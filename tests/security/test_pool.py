"""An attacker against an Enterprise pool's members and the state they share.

A member relays a request onto one of its clients' connections only for another
member (its server certificate, over mutual TLS) and only to a connection it named
itself (an HMAC'd flow token). Here a client replays a real token it read from the
pool's state, a member's certificate comes with a forged token, and the shared state
is poisoned with bindings that name strangers: nothing reaches anyone it should not,
and no member sends to an address the state merely names.
"""

from __future__ import annotations

import json

from tests.e2e.edge_deployment import DOMAIN, send_message, sign_in
from tests.e2e.pool_deployment import PoolDeployment, knows, pool
from tests.e2e.sipclient import SipClient

__all__ = ["pool"]


def _token_of(pool: PoolDeployment, user: str) -> tuple[str, str]:
    """A real binding of ``user`` as the pool's Redis holds it: (token, contact)."""
    with pool.redis() as r:
        fields = r.hgetall(f"{pool.prefix}reg:sip:{user}@{DOMAIN}")
    data = json.loads(next(iter(fields.values())))
    return data["token"], data["uri"]


def _relay(client: SipClient, token: str, contact: str, port: int, user: str) -> bytes:
    route = f"Route: <sip:{token}@fe1.{DOMAIN}:{port};transport=tls;lr>"
    return client.request(
        "MESSAGE", contact, from_user=user, to=f"sip:alice@{DOMAIN}",
        headers=[route, "Content-Type: text/plain"], body=b"let me in",
    )  # fmt: skip


def test_a_client_replaying_a_real_token_is_not_relayed(pool: PoolDeployment) -> None:
    alice = pool.client("fe1", "127.0.0.31")
    assert sign_in(alice, "alice").status == 200
    knows(pool.processes["fe2"], alice, "alice", "fe1")
    token, contact = _token_of(pool, "alice")
    eve = pool.client("fe1", "127.0.0.32")
    eve.send_raw(_relay(eve, token, contact, pool.ports["fe1"], "bob"))
    answer = eve.final()
    assert answer.status == 403, answer
    # alice got nothing: the next thing on her connection is a real message.
    bob = pool.client("fe2", "127.0.0.33")
    assert sign_in(bob, "bob").status == 200
    send_message(bob, "bob", "alice", b"the real one")
    real = alice.recv_request()
    assert real.body == b"the real one"
    alice.reply(real, 200)
    assert bob.final().status == 200


def test_a_member_certificate_with_a_forged_token_reaches_nobody(pool: PoolDeployment) -> None:
    """Even a member (here fe2's own certificate) gets 430 for a token fe1 did not make."""
    alice = pool.client("fe1", "127.0.0.36")
    assert sign_in(alice, "alice").status == 200
    fe2_tls = pool.root / "hosts" / "fe2" / "tls"
    member = SipClient(
        "tls", pool.ports["fe1"], domain=DOMAIN, ca=pool.ca, host="127.0.0.34",
        server="127.0.4.1", server_name=f"fe1.{DOMAIN}",
        cert=(str(fe2_tls / "server.crt"), str(fe2_tls / "server.key")),
    )  # fmt: skip
    token, contact = _token_of(pool, "alice")
    text, _, mac = token.rpartition(".")
    for forged in (f"{text}.{'0' * len(mac)}", "garbage", f"{text[:-2]}AA.{mac}"):
        member.send_raw(_relay(member, forged, contact, pool.ports["fe1"], "bob"))
        answer = member.final()
        assert answer.status == 430, (forged, answer)
    alice.close()


def test_poisoned_shared_state_sends_nothing_to_strangers(pool: PoolDeployment) -> None:
    """Bindings for carol that name an unknown member, or a Path to an outside address,
    are never used: a message for her is held for when she signs in."""
    key = f"{pool.prefix}reg:sip:carol@{DOMAIN}"
    base = {
        "token": "x", "uri": "sip:carol@203.0.113.5:5061", "contact": "<sip:carol@203.0.113.5>",
        "expires_at": 4e9, "call_id": "poison", "cseq": 1, "transport": "tls",
        "remote_addr": "203.0.113.5:5061", "updated_at": 1.0, "q": 1.0,
        "instance_id": None, "reg_id": None, "user_agent": None,
    }  # fmt: skip
    with pool.redis() as r:
        r.hset(key, "u:stranger", json.dumps(base | {"member": "evil.example.org", "path": []}))
        r.hset(
            key, "u:path",
            json.dumps(base | {"member": f"fe1.{DOMAIN}", "path": ["<sip:203.0.113.5;lr>"]}),
        )  # fmt: skip
        r.publish(f"{pool.prefix}events", f"fe1.{DOMAIN} loc sip:carol@{DOMAIN}")
    bob = pool.client("fe2", "127.0.0.35")
    assert sign_in(bob, "bob").status == 200
    send_message(bob, "bob", "carol", b"are you there?")
    answer = bob.final()
    # Held for carol (202), or tried through fe1, which knows no such token (430 -> held).
    assert answer.status == 202, answer
