"""Two Conclave organisations federate Edge to Edge over mutual TLS; strangers are refused.

alice@org-a.test and bob@org-b.test, each signed in at their own Front End,
exchange messages both ways. What reaches org-b names no internal host or
address of org-a. A domain that is not a partner is refused at the sending
Edge (403), and so is a partner that speaks for another domain.
"""

from __future__ import annotations

import os

from conclave.sip.address import parse_name_addr
from conclave.sip.message import Request, Response, make_response

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


def test_a_call_crosses_and_ends(federation: Federation) -> None:
    a, b = federation.orgs["a"], federation.orgs["b"]
    alice, bob = sign_in(a, "alice"), sign_in(b, "bob")
    uri = f"sip:bob@{b.domain}"
    first = alice.send("INVITE", uri, from_user="alice", call_id="fed-call-1")
    assert first.status == 407, first
    auth = digest_header(first, user="alice", password=PASSWORDS["alice"], method="INVITE", uri=uri)
    alice.send_raw(
        alice.request("INVITE", uri, from_user="alice", call_id="fed-call-1", headers=[auth])
    )
    ringing = bob.recv_request()
    assert ringing.method == "INVITE"
    names_nothing_inside(ringing, a)
    ok = make_response(ringing, 200, to_tag="bobfed")
    for entry in ringing.headers.get_all("Record-Route"):
        ok.headers.add("Record-Route", entry)
    ok.headers.add("Contact", f"<sip:bob@{b.net}.9:{bob.local_port};transport=tls>")
    bob.send_raw(ok.serialise())
    answered = alice.final()
    assert answered.status == 200
    names_nothing_inside(answered, b)
    # bob hangs up along his route set (org-b's Front End, then its Edge, then org-a's).
    route = ringing.headers.get_all("Record-Route")
    target = str(parse_name_addr(ringing.headers.get("Contact") or "").uri)
    bye = (
        f"BYE {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {b.net}.9:{bob.local_port};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
        "Max-Forwards: 70\r\n" + "".join(f"Route: {r}\r\n" for r in route)
        + f"From: {ok.headers.get('To')}\r\nTo: {ok.headers.get('From')}\r\n"
        "Call-ID: fed-call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    )  # fmt: skip
    bob.send_raw(bye.encode())
    ended = alice.recv_request()
    assert ended.method == "BYE" and ended.call_id == "fed-call-1"
    names_nothing_inside(ended, b)
    alice.reply(ended, 200)
    assert bob.final().status == 200


def test_presence_crosses_to_a_partner_that_opted_in(federation: Federation) -> None:
    a, b = federation.orgs["a"], federation.orgs["b"]
    sign_in(a, "carol")
    bob = sign_in(b, "bob")
    uri = f"sip:carol@{a.domain}"
    headers = ["Event: presence", "Accept: application/pidf+xml", "Expires: 600"]
    first = bob.send("SUBSCRIBE", uri, from_user="bob", call_id="fed-sub-1", headers=headers)
    assert first.status == 407, first
    auth = digest_header(first, user="bob", password=PASSWORDS["bob"], method="SUBSCRIBE", uri=uri)
    bob.send_raw(
        bob.request(
            "SUBSCRIBE", uri, from_user="bob", call_id="fed-sub-1", headers=[*headers, auth]
        )
    )
    answer: Response | None = None
    notify: Request | None = None
    while answer is None or notify is None:
        received = bob.recv_message()
        if isinstance(received, Request):
            notify = received
            bob.reply(received, 200)
        elif received.status >= 200:
            answer = received
    assert answer.status in (200, 202), answer
    assert notify.method == "NOTIFY" and notify.headers.get("Event") == "presence"
    names_nothing_inside(notify, a)
    assert b"carol@org-a.test" in notify.body
