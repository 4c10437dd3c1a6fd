"""Registrations survive a graceful restart; a UDP device stays reachable."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header

REG_URI = "sip:localhost"


def test_udp_binding_survives_restart(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(transports="tls,udp")
    bob = SipClient("udp", server.ports["udp"])
    first = bob.send(
        "REGISTER", REG_URI, from_user="bob", to="sip:bob@localhost", headers=["Expires: 600"]
    )
    auth = digest_header(
        first, user="bob", password=PASSWORDS["bob"], method="REGISTER", uri=REG_URI
    )
    assert (
        bob.send(
            "REGISTER",
            REG_URI,
            from_user="bob",
            to="sip:bob@localhost",
            headers=["Expires: 600", auth],
        ).status
        == 200
    )
    assert server.stop() == 0
    assert server.events("stopped")[0]["registrations_flushed"] >= 1

    # Same data directory. The test deployment uses port 0, so the restarted
    # server listens on a new UDP port: bob's binding must still reach him.
    server.start()
    assert server.events("ready")[0]["registrations_restored"] == 1
    bob.port = server.ports["udp"]
    alice = SipClient("udp", server.ports["udp"])
    uri = "sip:bob@localhost"
    first = alice.send(
        "MESSAGE",
        uri,
        from_user="alice",
        headers=["Content-Type: text/plain"],
        body=b"still there?",
    )
    auth = digest_header(
        first, user="alice", password=PASSWORDS["alice"], method="MESSAGE", uri=uri
    )
    alice.send_raw(
        alice.request(
            "MESSAGE",
            uri,
            from_user="alice",
            headers=["Content-Type: text/plain", auth],
            body=b"still there?",
        )
    )
    incoming = bob.recv_request()
    assert incoming.body == b"still there?"
    bob.reply(incoming, 200)
    assert alice.final().status == 200
