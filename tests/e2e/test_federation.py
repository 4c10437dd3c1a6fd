"""Two Conclave organisations federate Edge to Edge over mutual TLS; strangers are refused.

alice@org-a.test and bob@org-b.test, each signed in at their own Front End,
exchange messages both ways. What reaches org-b names no internal host or
address of org-a. A domain that is not a partner is refused at the sending
Edge (403), and so is a partner that speaks for another domain.
"""

from __future__ import annotations

from conclave.sip.address import parse_name_addr
from conclave.sip.message import Request, Response

from .federation_deployment import PASSWORDS, Federation, Org, federation
from .sipclient import SipClient, digest_header

__all__ = ["federation"]


def sign_in(org: Org, user: str) -> SipClient:
    client = org.client()
    uri, to = f"sip:{org.domain}", f"sip:{user}@{org.domain}"
    first = client.send("REGISTER", uri, from_user=user, to=to, headers=["Expires: 600"])
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="REGISTER", uri=uri)
    final = client.send("REGISTER", uri, from_user=user, to=to, headers=["Expires: 600", auth])
    assert final.status == 200, final
    return client


def message(client: SipClient, user: str, uri: str, text: bytes) -> Response | None:
    """A MESSAGE with credentials; returns a final answer that came before the challenge."""
    headers = ["Content-Type: text/plain"]
    first = client.send("MESSAGE", uri, from_user=user, headers=headers, body=text)
    if first.status != 407:
        return first
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="MESSAGE", uri=uri)
    client.send_raw(
        client.request("MESSAGE", uri, from_user=user, headers=[*headers, auth], body=text)
    )
    return None


def names_nothing_inside(message: Request | Response, org: Org) -> None:
    text = message.serialise().decode(errors="replace")
    for secret in (f"fe.{org.domain}", f"edge-int.{org.domain}", f"{org.net}.1", f"{org.net}.9"):
        assert secret not in text, f"{secret} of {org.domain} leaked:\n{text}"


def test_messages_cross_both_ways(federation: Federation) -> None:
    a, b = federation.orgs["a"], federation.orgs["b"]
    alice, bob = sign_in(a, "alice"), sign_in(b, "bob")

    assert message(alice, "alice", f"sip:bob@{b.domain}", b"hello org-b") is None
    incoming = bob.recv_request()
    assert incoming.body == b"hello org-b"
    sender = parse_name_addr(incoming.headers.get("From") or "").uri
    assert str(sender) == f"sip:alice@{a.domain}"
    names_nothing_inside(incoming, a)
    assert "Conclave-Partner" not in incoming.headers
    bob.reply(incoming, 200)
    assert alice.final().status == 200

    assert message(bob, "bob", f"sip:alice@{a.domain}", b"hello org-a") is None
    back = alice.recv_request()
    assert back.body == b"hello org-a"
    names_nothing_inside(back, b)
    alice.reply(back, 200)
    assert bob.final().status == 200
    # org-a found org-b by DNS SRV; org-b reached org-a's fixed edge by its A record.
    log = federation.dns.log.read_text()
    assert f"_sipfederationtls._tcp.{b.domain}" in log and f"sip.{a.domain}" in log
    connected = federation.edge("a").wait_for(lambda e: e.get("event") == "partner connected")
    assert connected["partner"] == b.domain


def test_domains_that_are_not_partners_are_refused(federation: Federation) -> None:
    a = federation.orgs["a"]
    alice = sign_in(a, "alice")
    for domain in ("org-c.test", "blocked.test"):
        answer = message(alice, "alice", f"sip:carol@{domain}", b"hi")
        final = answer or alice.final()
        assert final.status == 403, final
        assert "not allowed" in final.reason
