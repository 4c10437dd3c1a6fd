"""An attacker's session against subscription dialogs this server is a party to.

A refresh on the subscription's own connection needs no new credentials (as
any in-dialog request on its party's flow); from anywhere else it must sign
in as the watcher. Mallory has sniffed Alice's subscription to Bob.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient, digest_header
from tests.e2e.test_presence import FAST, Peer, Subscription

from .conftest import PASSWORDS


def refresh_from(client: SipClient, sub: Subscription, expires: int, cseq: int) -> bytes:
    port = client.local_port
    lines = [
        f"SUBSCRIBE {sub.remote} SIP/2.0",
        f"Via: SIP/2.0/TCP 127.0.0.2:{port};branch=z9hG4bK{os.urandom(8).hex()};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@localhost>;tag={sub.from_tag}",
        f"To: <{sub.target}>;tag={sub.to_tag}",
        f"Call-ID: {sub.call_id}",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: <sip:alice@127.0.0.2:{port};transport=tcp>",
        "Event: presence",
        f"Expires: {expires}",
    ]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def test_a_sniffed_subscription_cannot_be_ended_from_elsewhere(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(transports="tls,tcp", config=FAST)
    alice = Peer(server, "alice")
    sub = Subscription(alice, "sip:bob@localhost", expires=600)
    alice.notify()
    # The owner's own refresh, on its connection: no challenge.
    assert sub.refresh(600).status == 200
    alice.notify()
    # Mallory, from another connection, with no credentials: challenged.
    mallory = SipClient("tcp", server.ports["tcp"], host="127.0.0.2")
    raw = refresh_from(mallory, sub, 0, 90)
    mallory.send_raw(raw)
    challenge = mallory.final()
    assert challenge.status == 407
    # With Carol's credentials: not her subscription.
    auth = digest_header(
        challenge, user="carol", password=PASSWORDS["carol"], method="SUBSCRIBE", uri=sub.remote
    )
    mallory.send_raw(raw.replace(b"Content-Length: 0", auth.encode() + b"\r\nContent-Length: 0"))
    assert mallory.final().status == 403
    # Alice's subscription is intact: her next refresh is a 200 and a NOTIFY.
    assert sub.refresh(600).status == 200
    assert alice.notify().method == "NOTIFY"
