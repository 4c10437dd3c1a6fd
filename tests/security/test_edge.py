"""An attacker against the Access Edge: the only listener the internet reaches.

A real deployment (``fe1`` and ``edge1`` as ``conclave serve`` processes). The
attacker tries the internal side without the right certificate, tries to use
the Edge as an open relay, forges flow tokens and dialog ids, takes over
another remote user's dialog, and guesses passwords through the Edge. Each
test uses its own source address (127.0.0.x) so that a ban in one does not
decide another.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import pytest

from conclave.pki import load_ca
from conclave.sip.message import Response
from tests.e2e.edge_deployment import (
    DOMAIN,
    EDGE_EXTERNAL,
    PASSWORDS,
    EdgeDeployment,
    edge_deployment,
    sign_in,
)
from tests.e2e.sipclient import SipClient, digest_header

__all__ = ["edge_deployment"]

OPTIONS = (
    "OPTIONS sip:{domain} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK{branch}\r\n"
    "Max-Forwards: 70\r\nTo: <sip:{domain}>\r\nFrom: <sip:probe@{domain}>;tag=1\r\n"
    "Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def inside_client(deployment: EdgeDeployment, cert: tuple[str, str] | None) -> SipClient:
    """A client on the Edge's internal side, presenting ``cert``."""
    return SipClient(
        "tls", deployment.internal_port, domain=DOMAIN, ca=deployment.ca, cert=cert,
        server_name=f"edge1-int.{DOMAIN}",
    )  # fmt: skip


def issued(deployment: EdgeDeployment, tmp_path: Path, *, user: bool, name: str) -> tuple[str, str]:
    ca = load_ca(deployment.root / "ca")
    certificate = ca.issue_client(name, DOMAIN) if user else ca.issue_server([name])
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    certificate.write(cert, key)
    return str(cert), str(key)


def closed_without_answer(client: SipClient) -> bool:
    client.send_raw(OPTIONS.format(domain=DOMAIN, branch=os.urandom(6).hex()).encode())
    try:
        return client.recv_raw(timeout=5) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def test_internal_side_demands_a_certificate(edge_deployment: EdgeDeployment) -> None:
    context = ssl.create_default_context(cafile=edge_deployment.ca)
    address = ("127.0.0.1", edge_deployment.internal_port)
    with (
        socket.create_connection(address, timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw, server_hostname=f"edge1-int.{DOMAIN}") as tls,
    ):
        tls.sendall(OPTIONS.format(domain=DOMAIN, branch="nocert").encode())
        assert tls.recv(65535) == b""
        raise ConnectionError("closed without an answer")


@pytest.mark.parametrize(
    ("user", "name"), [(True, "mallory"), (False, "intruder.example.test")], ids=["user", "server"]
)
def test_internal_side_refuses_certificates_of_anyone_but_the_pool(
    edge_deployment: EdgeDeployment, tmp_path: Path, user: bool, name: str
) -> None:
    """A user's client certificate, or a server certificate of a host outside the pool,
    from the organisation's own CA: the connection is closed at its first message."""
    client = inside_client(edge_deployment, issued(edge_deployment, tmp_path, user=user, name=name))
    assert closed_without_answer(client)


def fe_certificate(deployment: EdgeDeployment) -> tuple[str, str]:
    tls = deployment.host_dir("fe1") / "tls"
    return str(tls / "server.crt"), str(tls / "server.key")


@pytest.mark.parametrize(
    "token",
    [
        "3039-00000000000000000000",  # the right shape, a forged MAC
        "deadbeef",  # not a token at all
        "0123456789abcdef0123456789abcdef",  # the shape of a dialog id that does not exist
    ],
)
def test_forged_routes_from_inside_reach_no_one(
    edge_deployment: EdgeDeployment, token: str
) -> None:
    """Even a server of the pool cannot make the Edge send to a connection it did not name."""
    client = inside_client(edge_deployment, fe_certificate(edge_deployment))
    route = f"Route: <sip:{token}@edge1-int.{DOMAIN}:{edge_deployment.internal_port};lr>"
    response = client.send(
        "MESSAGE", f"sip:alice@{EDGE_EXTERNAL}:5061;transport=tls", from_user="bob",
        headers=[route, "Content-Type: text/plain"], body=b"x",
    )  # fmt: skip
    assert response.status in (403, 430, 481), response
    no_route = client.send("MESSAGE", f"sip:alice@{DOMAIN}", from_user="bob")
    assert no_route.status == 403


def test_no_open_relay_from_outside(edge_deployment: EdgeDeployment) -> None:
    client = edge_deployment.remote("127.0.0.31")
    # A Route past the Edge (to the Front End, or anywhere): refused, never followed.
    for route in (f"<sip:fe1.{DOMAIN}:{edge_deployment.fe_port};transport=tls;lr>",
                  "<sip:198.51.100.7;lr>"):  # fmt: skip
        response = client.send(
            "MESSAGE", f"sip:bob@{DOMAIN}", from_user="alice", headers=[f"Route: {route}"]
        )
        assert response.status == 403 and "Relaying" in response.reason
    # Another domain, or a sender of another domain: federation is not this listener's.
    assert client.send("MESSAGE", "sip:someone@example.org", from_user="alice").status == 403
    other = client.send("MESSAGE", f"sip:bob@{DOMAIN}", from_user="eve", from_domain="evil.test")
    assert other.status == 403


def test_dialogs_cannot_be_forged_or_taken_over(edge_deployment: EdgeDeployment) -> None:
    bob = edge_deployment.internal()
    assert sign_in(bob, "bob").status == 200
    alice = edge_deployment.remote("127.0.0.32")
    assert sign_in(alice, "alice").status == 200
    uri = f"sip:bob@{DOMAIN}"
    first = alice.send("INVITE", uri, from_user="alice", call_id="takeover-1")
    auth = digest_header(first, user="alice", password=PASSWORDS["alice"], method="INVITE", uri=uri)
    alice.send_raw(alice.request("INVITE", uri, from_user="alice", call_id="takeover-1",
                                 headers=[auth]))  # fmt: skip
    ringing = bob.recv_request()
    from conclave.sip.message import make_response

    ok = make_response(ringing, 200, to_tag="bob9")
    for entry in ringing.headers.get_all("Record-Route"):
        ok.headers.add("Record-Route", entry)
    ok.headers.add("Contact", f"<sip:bob@127.0.0.1:{bob.local_port};transport=tls>")
    bob.send_raw(ok.serialise())
    answered = alice.final()
    assert answered.status == 200
    route = answered.headers.get_all("Record-Route")[0]
    # mallory, another remote connection, replays alice's dialog: refused at the Edge.
    mallory = edge_deployment.remote("127.0.0.33")
    bye = (
        f"BYE sip:bob@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.33:{mallory.local_port};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
        f"Max-Forwards: 70\r\nRoute: {route}\r\nFrom: {answered.headers.get('From')}\r\n"
        f"To: {answered.headers.get('To')}\r\nCall-ID: takeover-1\r\nCSeq: 9 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    mallory.send_raw(bye.encode())
    assert mallory.final().status == 403
    # A dialog id nobody was given: 481, and nothing reaches bob.
    forged = bye.replace(route.split("@")[0], "<sip:" + "ab" * 16)
    mallory.send_raw(forged.encode())
    assert mallory.final().status == 481


def test_password_guessing_through_the_edge_bans_the_guesser_not_the_edge(
    edge_deployment: EdgeDeployment,
) -> None:
    """The Front End counts failures against the client behind the Edge, tells the Edge,
    and the Edge bans that client at the perimeter; the account stays usable throughout
    from where its user signed in before, and other remote users keep working through
    the Edge."""
    familiar = edge_deployment.remote("127.0.0.41")
    assert sign_in(familiar, "carol").status == 200
    attacker = edge_deployment.remote("127.0.0.42")
    budget, answers = 200, []
    for attempt in range(budget):
        try:
            response = sign_in(attacker, "carol", password=f"guess-{attempt}")
        except (ConnectionError, OSError, ssl.SSLError):
            break  # the Edge closed the connection: banned
        answers.append(response)
        assert response.status in (401, 403)
        assert "Conclave-Source-Ban" not in response.headers  # the Edge's business only
        if attempt % 3 == 2:  # throughout the attack, carol signs in where she did before
            assert sign_in(familiar, "carol").status == 200
    assert answers and len(answers) < budget
    assert all(a.status != 200 for a in answers)
    # Banned at the perimeter: a new connection from the attacker is refused.
    with pytest.raises((ConnectionError, OSError, ssl.SSLError)):
        again = edge_deployment.remote("127.0.0.42")
        sign_in(again, "carol")
    # carol signs in again from her familiar address, and others through the Edge.
    assert sign_in(edge_deployment.remote("127.0.0.41"), "carol").status == 200
    assert sign_in(edge_deployment.remote("127.0.0.43"), "bob").status == 200
    edge = next(p for p in edge_deployment.processes if "edge1" in p.args)
    banned = edge.wait_for(lambda e: e.get("event") == "source banned", 10)
    assert banned["source"] == "127.0.0.42" and banned["reason"] == "reported by the pool"


def test_stray_responses_and_garbage_from_outside_are_dropped(
    edge_deployment: EdgeDeployment,
) -> None:
    client = edge_deployment.remote("127.0.0.51")
    client.send_raw(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKstray\r\n"
        b"From: <sip:a@example.test>;tag=1\r\nTo: <sip:b@example.test>;tag=2\r\n"
        b"Call-ID: stray\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
    client.send_raw(b"NOT SIP AT ALL\r\n\r\n")
    reply = client.recv_raw(timeout=5)
    assert reply.startswith(b"SIP/2.0 400") or reply == b""
    # And the Edge still serves a well-formed request from a fresh connection.
    fresh = edge_deployment.remote("127.0.0.52")
    assert isinstance(sign_in(fresh, "alice"), Response)
