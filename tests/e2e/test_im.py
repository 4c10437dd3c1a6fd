"""Instant messages between registered users, online and offline, over TLS."""

from __future__ import annotations

from collections.abc import Callable

from conclave.sip.address import parse_name_addr

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header

REG_URI = "sip:localhost"


def signed_in(server: ConclaveServer, user: str) -> SipClient:
    client = SipClient("tls", server.ports["tls"], ca=str(server.ca))
    to = f"sip:{user}@localhost"
    first = client.send("REGISTER", REG_URI, from_user=user, to=to, headers=["Expires: 600"])
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="REGISTER", uri=REG_URI)
    final = client.send("REGISTER", REG_URI, from_user=user, to=to, headers=["Expires: 600", auth])
    assert final.status == 200, final
    return client


def send_im(client: SipClient, user: str, to_user: str, text: bytes, **kw: object) -> int:
    uri = f"sip:{to_user}@localhost"
    headers = ["Content-Type: text/plain", *kw.pop("headers", [])]  # type: ignore[misc]
    first = client.send("MESSAGE", uri, from_user=user, headers=headers, body=text)
    assert first.status == 407, first
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="MESSAGE", uri=uri)
    client.send_raw(
        client.request("MESSAGE", uri, from_user=user, headers=[*headers, auth], body=text)
    )
    return 0


def test_message_between_online_users(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    bob = signed_in(server, "bob")
    send_im(alice, "alice", "bob", b"hello bob")
    incoming = bob.recv_request()
    assert incoming.method == "MESSAGE"
    assert incoming.body == b"hello bob"
    assert parse_name_addr(incoming.headers.get("From") or "").uri.user == "alice"  # type: ignore[union-attr]
    assert "Proxy-Authorization" not in incoming.headers
    bob.reply(incoming, 200)
    assert alice.final().status == 200


def test_offline_message_is_stored_and_delivered_on_register(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    date = "Thu, 26 Nov 2026 08:00:00 GMT"
    send_im(alice, "alice", "carol", b"are you there?", headers=[f"Date: {date}"])
    stored = alice.final()
    assert stored.status == 202
    server.wait_for(lambda e: e.get("event") == "message held for offline user")
    carol = signed_in(server, "carol")
    delivered = carol.recv_request()
    assert delivered.method == "MESSAGE"
    assert delivered.body == b"are you there?"
    assert delivered.headers.get("Date") == date
    assert parse_name_addr(delivered.headers.get("From") or "").uri.user == "alice"  # type: ignore[union-attr]
    carol.reply(delivered, 200)
    server.wait_for(lambda e: e.get("event") == "offline message delivered")


def test_message_to_unknown_user_is_404(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server()
    alice = signed_in(server, "alice")
    send_im(alice, "alice", "nobody", b"hi")
    assert alice.final().status == 404
