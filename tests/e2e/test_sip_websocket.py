"""SIP over WebSocket (RFC 7118) on the web listener, end to end.

A WebSocket client (what JsSIP does in a browser: subprotocol ``sip``, one
SIP message per WebSocket message, the page's Origin) signs in with digest
authentication and exchanges messages with a user on SIP/TLS; when its
WebSocket closes, its registration goes with the flow.
"""

from __future__ import annotations

from collections.abc import Callable

from .conftest import PASSWORDS
from .server import ConclaveServer
from .sipclient import SipClient, digest_header
from .test_im import send_im, signed_in

WEB = {
    "web": {"enabled": True, "crl_bind": "127.0.0.1:0", "bind": "127.0.0.1:0"},
    "transports": {"ws": True},
}
REG_URI = "sip:localhost"


def web_port_and_origin(server: ConclaveServer) -> tuple[int, str]:
    event = server.wait_for(lambda e: e.get("event") == "web listening")
    return int(event["port"]), str(event["origins"][0])


def ws_signed_in(server: ConclaveServer, user: str) -> SipClient:
    port, origin = web_port_and_origin(server)
    client = SipClient("wss", port, ca=str(server.ca), server_name="localhost", origin=origin)
    to = f"sip:{user}@localhost"
    first = client.send("REGISTER", REG_URI, from_user=user, to=to, headers=["Expires: 600"])
    assert first.status == 401, first
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="REGISTER", uri=REG_URI)
    final = client.send("REGISTER", REG_URI, from_user=user, to=to, headers=["Expires: 600", auth])
    assert final.status == 200, final
    return client


def test_a_websocket_user_and_a_tls_user_talk(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(config=WEB)
    alice = ws_signed_in(server, "alice")
    bob = signed_in(server, "bob")

    send_im(alice, "alice", "bob", b"hello from the browser")
    incoming = bob.recv_request()
    assert (incoming.method, incoming.body) == ("MESSAGE", b"hello from the browser")
    bob.reply(incoming, 200)
    assert alice.final().status == 200

    send_im(bob, "bob", "alice", b"hello, browser")
    incoming = alice.recv_request()  # over the WebSocket, one message per frame
    assert (incoming.method, incoming.body) == ("MESSAGE", b"hello, browser")
    alice.reply(incoming, 200)
    assert bob.final().status == 200

    # The WebSocket closes: the binding goes with its flow.
    alice.close()
    server.wait_for(lambda e: e.get("event") == "flow closed; bindings removed")
    send_im(bob, "bob", "alice", b"are you there?")
    assert bob.final().status != 200  # not delivered to a dead flow (stored or refused)
