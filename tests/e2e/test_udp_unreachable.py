"""A device that vanished from a UDP binding: the ICMP error ends the branch at once.

Bob registers over UDP and his program exits (its port closes) while his
binding lives on. A MESSAGE to him used to be retransmitted to the dead port
for 32 s (Timer F) before the sender heard anything. The kernel answers each
datagram to a closed port with ICMP port unreachable; the server reads that
error (IP_RECVERR), finds the client transaction the quoted datagram names
(its top Via branch) and fails it at once (RFC 3261 §17.1.4): the sender gets
its final answer long before Timer F, and the server logs "destination
unreachable".
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conclave.sip.message import Response

from .server import ConclaveServer
from .sipclient import SipClient, digest_header
from .test_security import register

USERS = {"alice": "Quiet-Harbour-4821", "bob": "Amber-Lantern-9035"}
ANSWER_WITHIN = 10.0
"""Seconds the sender waits for its final answer: far below Timer F (32 s),
which is how long the answer took before; a slow machine does not come near."""


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,udp", users=USERS)


def message(client: SipClient, sender: str, to_user: str) -> Response:
    uri = f"sip:{to_user}@localhost"
    headers = ["Content-Type: text/plain"]
    body = b"are you there?"
    first = client.send("MESSAGE", uri, from_user=sender, headers=headers, body=body)
    assert first.status == 407, first
    auth = digest_header(first, user=sender, password=USERS[sender], method="MESSAGE", uri=uri)
    signed = client.request("MESSAGE", uri, from_user=sender, headers=[*headers, auth], body=body)
    client.send_raw(signed)
    return client.final(timeout=ANSWER_WITHIN)


def test_a_message_to_a_dead_udp_binding_fails_at_once(server: ConclaveServer) -> None:
    bob = SipClient("udp", server.ports["udp"])
    assert register(bob, "bob", USERS["bob"])[0] == 200
    bob.close()  # his program exits; the binding stays
    alice = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    try:
        answer = message(alice, "alice", "bob")
    finally:
        alice.close()
    assert answer.status >= 500, answer
    event = server.wait_for(lambda e: e.get("event") == "destination unreachable")
    assert event["method"] == "MESSAGE"
