"""An attacker against the federation listener: strangers, impostors and floods.

Two organisations federate (``federation`` fixture: org-a and org-b, each a
Front End and an Edge, dnsmasq for DNS). The attacker connects to org-a's
federation listener with a certificate from a CA nobody trusts, with one from
the partner's CA that names another domain, and with the partner's real
certificate but speaking for someone else, registering, relaying onward, and
flooding.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from pathlib import Path

import pytest

from conclave.pki import create_ca, load_ca
from tests.e2e.federation_deployment import Federation, Org, federation
from tests.e2e.sipclient import SipClient

__all__ = ["federation"]


def to_federation(org: Org, cert: tuple[str, str], *, source: str = "127.0.3.9") -> SipClient:
    """A TLS client on ``org``'s federation listener, presenting ``cert``."""
    return SipClient(
        "tls", org.federation_port, domain="org-b.test", ca=org.ca, host=source,
        server=f"{org.net}.2", server_name=f"sip.{org.domain}", cert=cert,
    )  # fmt: skip


def partner_certificate(federation: Federation) -> tuple[str, str]:
    tls = federation.orgs["b"].root / "hosts" / "edge-b" / "tls"
    return str(tls / "external.crt"), str(tls / "external.key")


def issued(ca_dir: Path, name: str, out: Path) -> tuple[str, str]:
    cert, key = out / f"{name}.crt", out / f"{name}.key"
    load_ca(ca_dir).issue_server([name]).write(cert, key)
    return str(cert), str(key)


def test_a_certificate_from_an_unknown_ca_fails_the_handshake(
    federation: Federation, tmp_path: Path
) -> None:
    create_ca(tmp_path / "ca-c", common_name="Conclave CA for Org C")
    cert = issued(tmp_path / "ca-c", "sip.org-c.test", tmp_path)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        client = to_federation(federation.orgs["a"], cert)
        client.send("MESSAGE", "sip:alice@org-a.test", from_user="carol", from_domain="org-c.test")


def test_the_partners_ca_cannot_vouch_for_another_domain(
    federation: Federation, tmp_path: Path
) -> None:
    """org-b's CA issues a certificate for org-c.test: the chain verifies, but org-b's
    CA speaks only for org-b.test, so the connection is closed unanswered."""
    cert = issued(federation.orgs["b"].root / "ca", "sip.org-c.test", tmp_path)
    client = to_federation(federation.orgs["a"], cert)
    message = client.request(
        "MESSAGE", "sip:alice@org-a.test", from_user="carol", from_domain="org-c.test"
    )
    client.send_raw(message)
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        assert client.recv_raw(timeout=5) == b""
    edge = federation.edge("a")
    refused = edge.wait_for(lambda e: e.get("event") == "federation connection refused", 10)
    assert "no allowed partner" in refused["reason"]


def test_a_partner_speaks_only_for_its_own_domain_and_users(federation: Federation) -> None:
    client = to_federation(federation.orgs["a"], partner_certificate(federation))
    impostor = client.send(
        "MESSAGE", "sip:alice@org-a.test", from_user="carol", from_domain="org-c.test"
    )
    assert impostor.status == 403 and "partner's domain" in impostor.reason
    local = client.send(
        "MESSAGE", "sip:alice@org-a.test", from_user="alice", from_domain="org-a.test"
    )
    assert local.status == 403  # org-b cannot speak as org-a's own users
    onward = client.send(
        "MESSAGE", "sip:someone@org-c.test", from_user="bob", from_domain="org-b.test"
    )
    assert onward.status == 403 and "Not a domain" in onward.reason
    register = client.send("REGISTER", "sip:org-a.test", from_user="bob", from_domain="org-b.test")
    assert register.status == 403
    relay = client.send(
        "MESSAGE", "sip:alice@org-a.test", from_user="bob", from_domain="org-b.test",
        headers=["Route: <sip:fe.org-a.test;lr>"],
    )  # fmt: skip
    assert relay.status == 403 and "Relaying" in relay.reason
    spoofed = client.send(
        "MESSAGE", "sip:nobody@org-a.test", from_user="bob", from_domain="org-b.test",
        headers=["Conclave-Partner: org-a.test"],
    )  # fmt: skip
    assert spoofed.status == 404  # delivered as org-b's, the forged header ignored


def test_a_partner_flood_is_throttled_not_banned(federation: Federation) -> None:
    """Past the partner's rate (20 per second), 503 with Retry-After; its connection and
    its later requests are still served."""
    client = to_federation(federation.orgs["a"], partner_certificate(federation))
    count = 100
    for _ in range(count):
        client.send_raw(
            client.request(
                "MESSAGE", "sip:nobody@org-a.test", from_user="bob", from_domain="org-b.test",
                call_id=os.urandom(6).hex(),
            )
        )  # fmt: skip
    statuses = [client.final().status for _ in range(count)]
    throttled = statuses.count(503)
    assert throttled > 0 and statuses.count(404) > 0, statuses
    federation.edge("a").wait_for(lambda e: e.get("event") == "partner throttled", 15)
