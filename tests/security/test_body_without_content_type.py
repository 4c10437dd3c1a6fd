"""A request whose body says nothing about what it is gets 400 (RFC 3261 §20.15).

The attacker sends a MESSAGE with a body and no Content-Type, hoping the
server relays or stores an unlabelled payload for the recipient's client to
guess at. Over UDP and TCP the server refuses it with 400 and a reason,
before authentication, and nothing reaches bob.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient

REASON = "missing Content-Type header for a non-empty body"


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,udp,tcp")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_untyped_body_is_400(server: ConclaveServer, transport: str) -> None:
    client = SipClient(transport, server.ports[transport])
    try:
        resp = client.send(
            "MESSAGE", "sip:bob@localhost", from_user="alice", body=b"click http://evil.test"
        )
        assert resp.status == 400
        assert resp.reason == REASON
        # The same request with its type is an ordinary one (challenged, not refused).
        typed = client.send(
            "MESSAGE",
            "sip:bob@localhost",
            from_user="alice",
            headers=["Content-Type: text/plain"],
            body=b"hello",
        )
        assert typed.status == 407
    finally:
        client.close()
    refused = server.wait_for(lambda e: e.get("event") == "request refused")
    assert refused["status"] == 400
    assert refused["reason"] == REASON
