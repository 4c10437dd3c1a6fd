"""An attacker against the Director and the trust Front Ends give it.

A Front End believes ``Conclave-Authenticated: USER`` only on a Director's
mutual-TLS connection. Here a client forges it, directly at a Front End and at
the Director; signs in as one user for another's registration; and sends an
in-dialog request with a dialog token nobody gave it.
"""

from __future__ import annotations

import os

from tests.e2e.edge_deployment import DOMAIN, PASSWORDS
from tests.e2e.sipclient import SipClient, digest_header
from tests.e2e.test_director import Deployment, deployment

__all__ = ["deployment"]


def test_a_forged_vouch_is_challenged_at_the_front_end(deployment: Deployment) -> None:
    client = deployment.internal("ee1")
    answer = client.send(
        "REGISTER", f"sip:{DOMAIN}", from_user="alice", to=f"sip:alice@{DOMAIN}",
        headers=["Conclave-Authenticated: alice", "Expires: 600"],
    )  # fmt: skip
    assert answer.status == 401, answer


def test_a_forged_vouch_is_challenged_at_the_director(deployment: Deployment) -> None:
    client = SipClient(
        "tls", deployment.ports["director"], domain=DOMAIN, ca=deployment.ca,
        server_name=f"dir1.{DOMAIN}",
    )  # fmt: skip
    for method, expected in (("REGISTER", 401), ("MESSAGE", 407)):
        uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:carol@{DOMAIN}"
        answer = client.send(
            method, uri, from_user="alice", to=f"sip:alice@{DOMAIN}",
            headers=["Conclave-Authenticated: alice"],
        )  # fmt: skip
        assert answer.status == expected, answer
    fe1 = deployment.processes["fe1"]
    assert not [e for e in fe1.lines if e.get("auth") == "director" and e.get("user") == "alice"]


def test_one_user_cannot_register_another(deployment: Deployment) -> None:
    client = deployment.remote("127.0.0.81")
    uri, to = f"sip:{DOMAIN}", f"sip:bob@{DOMAIN}"
    first = client.send("REGISTER", uri, from_user="alice", to=to)
    auth = digest_header(
        first, user="alice", password=PASSWORDS["alice"], method="REGISTER", uri=uri
    )
    answer = client.send("REGISTER", uri, from_user="alice", to=to, headers=[auth])
    assert answer.status == 403, answer


def test_an_invented_dialog_token_goes_nowhere(deployment: Deployment) -> None:
    client = SipClient(
        "tls", deployment.ports["director"], domain=DOMAIN, ca=deployment.ca,
        server_name=f"dir1.{DOMAIN}",
    )  # fmt: skip
    route = f"<sip:{'A' * 22}@dir1.{DOMAIN}:{deployment.ports['director']};transport=tls;lr>"
    bye = (
        f"BYE sip:carol@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:{client.local_port};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
        f"Max-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:alice@{DOMAIN}>;tag=a\r\n"
        f"To: <sip:carol@{DOMAIN}>;tag=c\r\nCall-ID: invented\r\nCSeq: 1 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    client.send_raw(bye.encode())
    assert client.final().status in (403, 481)
