"""An attacker's session against identity: claimed identities, case variants,
borrowed digest answers and nonces sent to someone else (issue 12, items 4, 5,
10 and 15)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conclave.sip.address import parse_name_addr
from tests.e2e.server import ConclaveServer, conclave
from tests.e2e.sipclient import SipClient, digest_header
from tests.e2e.test_im import send_im, signed_in
from tests.e2e.test_presence import FAST, Peer, Subscription, pidf
from tests.e2e.test_security import register

from .conftest import PASSWORDS

FORGED = ("P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID")


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,udp")


def test_a_client_cannot_assert_an_identity(server: ConclaveServer) -> None:
    alice, bob = signed_in(server, "alice"), signed_in(server, "bob")
    claims = [f"{name}: <sip:ceo@localhost>" for name in FORGED]
    send_im(alice, "alice", "bob", b"from the CEO", headers=claims)
    incoming = bob.recv_request()
    assert incoming.method == "MESSAGE"
    # Only what we authenticated is asserted; the client's claims are gone.
    assert incoming.headers.get_all("P-Asserted-Identity") == ["<sip:alice@localhost>"]
    assert incoming.headers.get("P-Preferred-Identity") is None
    assert incoming.headers.get("Remote-Party-ID") is None
    bob.reply(incoming, 200)  # nothing left open for the server's graceful stop


def test_privacy_id_means_no_assertion(server: ConclaveServer) -> None:
    alice, bob = signed_in(server, "alice"), signed_in(server, "bob")
    send_im(alice, "alice", "bob", b"quiet", headers=["Privacy: id"])
    incoming = bob.recv_request()
    assert incoming.headers.get("P-Asserted-Identity") is None
    bob.reply(incoming, 200)


def test_a_case_variant_is_the_same_user_not_a_new_one(server: ConclaveServer) -> None:
    alice, bob = signed_in(server, "alice"), signed_in(server, "bob")
    # Addressed as BOB, the message reaches bob's device: not a 202 for a
    # separate "BOB" whose store nobody ever reads.
    send_im(alice, "alice", "BOB", b"shouting")
    incoming = bob.recv_request()
    assert incoming.body == b"shouting"
    bob.reply(incoming, 200)
    assert alice.final().status == 200
    # Signing in as ALICE with alice's password is not alice, nor a new identity.
    udp = SipClient("udp", server.ports["udp"])
    status, _ = register(udp, "ALICE", PASSWORDS["alice"])
    assert status == 401
    # Authenticated as alice, claiming to be ALICE in From: refused.
    uri = "sip:bob@localhost"
    first = udp.send(
        "MESSAGE", uri, from_user="ALICE", headers=["Content-Type: text/plain"], body=b"x"
    )
    auth = digest_header(
        first, user="alice", password=PASSWORDS["alice"], method="MESSAGE", uri=uri
    )
    resp = udp.send(
        "MESSAGE", uri, from_user="ALICE", headers=["Content-Type: text/plain", auth], body=b"x"
    )
    assert resp.status == 403


def test_a_digest_answer_for_another_uri_is_refused(server: ConclaveServer) -> None:
    client = SipClient("udp", server.ports["udp"])
    first = client.send(
        "MESSAGE", "sip:bob@localhost", from_user="alice", headers=["Content-Type: text/plain"]
    )
    # Computed for a request to carol, replayed toward bob (RFC 7616 §3.4.6).
    auth = digest_header(
        first,
        user="alice",
        password=PASSWORDS["alice"],
        method="MESSAGE",
        uri="sip:carol@localhost",
    )
    resp = client.send(
        "MESSAGE",
        "sip:bob@localhost",
        from_user="alice",
        headers=["Content-Type: text/plain", auth],
        body=b"hi",
    )
    assert resp.status == 400 and "uri" in resp.reason


def test_a_nonce_sent_to_one_udp_address_is_useless_from_another(server: ConclaveServer) -> None:
    victim = SipClient("udp", server.ports["udp"], host="127.0.0.2")
    mallory = SipClient("udp", server.ports["udp"])
    to = "sip:alice@localhost"
    first = victim.send("REGISTER", "sip:localhost", from_user="alice", to=to)
    assert first.status == 401
    auth = digest_header(
        first, user="alice", password=PASSWORDS["alice"], method="REGISTER", uri="sip:localhost"
    )
    # The same answer from another source address does not authenticate...
    stolen = mallory.send("REGISTER", "sip:localhost", from_user="alice", to=to, headers=[auth])
    assert stolen.status == 401
    assert all(
        "stale=true" not in value.lower() for value in stolen.headers.get_all("WWW-Authenticate")
    )
    # ...from the address it was sent to, it does (the nonce-count is fresh).
    own = victim.send("REGISTER", "sip:localhost", from_user="alice", to=to, headers=[auth])
    assert own.status == 200
    contact = parse_name_addr(own.headers.get("Contact") or "").uri
    assert "127.0.0.2" in str(contact)


def test_case_variants_in_an_old_database_lock_both_out(tmp_path: Path) -> None:
    """A database from before names were unique in any case may hold ``alice``
    and ``ALICE`` (another person's account). Neither may sign in, rather than
    one taking the other over or watching presence as a second identity."""
    server = ConclaveServer(tmp_path / "data", users=dict(PASSWORDS), config=FAST).init()
    conclave(
        "privacy", "set", "bob", "sip:alice@localhost", "blocked", "--dir", str(server.data_dir)
    )
    db = sqlite3.connect(server.data_dir / "conclave.db")
    with db:
        secret = "ALICE:localhost:" + "Mallory-Password-1"
        db.execute(
            "INSERT INTO users (name, domain, ha1_md5, ha1_sha256, disabled, created_at)"
            " VALUES (?, 'localhost', ?, ?, 0, '2026-01-01 00:00:00')",
            (
                "ALICE",
                hashlib.md5(secret.encode()).hexdigest(),
                hashlib.sha256(secret.encode()).hexdigest(),
            ),
        )
    db.close()
    server.start()
    try:
        server.wait_for(lambda e: "differ only in case" in str(e.get("event")))
        for user, password in (("ALICE", "Mallory-Password-1"), ("alice", PASSWORDS["alice"])):
            client = SipClient("tls", server.ports["tls"], ca=str(server.ca))
            status, _ = register(client, user, password)
            assert status == 401, user
        assert (
            register(
                SipClient("tls", server.ports["tls"], ca=str(server.ca)), "bob", PASSWORDS["bob"]
            )[0]
            == 200
        )
    finally:
        server.stop()


def test_a_case_variant_does_not_see_through_a_block(tmp_path: Path) -> None:
    server = ConclaveServer(tmp_path / "data", users=dict(PASSWORDS), config=FAST).init()
    conclave(
        "privacy", "set", "bob", "sip:alice@localhost", "blocked", "--dir", str(server.data_dir)
    )
    server.start()
    try:
        alice, bob = Peer(server, "alice"), Peer(server, "bob")
        etag = bob.publish(pidf("bob", note="in the office"))
        assert etag
        for target in ("sip:BOB@localhost", "sip:Bob@localhost"):
            sub = Subscription(alice, target, expires=60)
            body = alice.notify().body
            assert b"<basic>open</basic>" not in body and b"office" not in body
            assert sub.refresh(0).status == 200
            alice.notify()
    finally:
        server.stop()
