"""An attacker against SIP over WebSocket on the web listener (RFC 7118).

A page on another site trying to use a visitor's browser (cross-site
WebSocket hijacking), a client that does not speak the ``sip`` subprotocol,
an oversized message, a stranger without credentials, a user claiming
another user's address, and a Via naming somewhere else: none gets further
than a plain TLS client would.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin, Subprotocol

from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient, digest_header
from tests.e2e.test_sip_websocket import WEB, web_port_and_origin

from .conftest import PASSWORDS

REG_URI = "sip:localhost"


def context(server: ConclaveServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    ctx.check_hostname = False
    return ctx


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(config=WEB)


def test_a_page_on_another_site_cannot_open_a_sip_websocket(server: ConclaveServer) -> None:
    port, _ours = web_port_and_origin(server)
    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{port}"):
        with pytest.raises(InvalidStatus) as refused:
            connect(
                f"wss://127.0.0.1:{port}/sip", ssl=context(server), origin=Origin(origin),
                subprotocols=[Subprotocol("sip")], open_timeout=10,
            )  # fmt: skip
        assert refused.value.response.status_code == 403
    event = server.wait_for(lambda e: e.get("event") == "websocket refused")
    assert event["reason"] == "origin not ours"


def test_no_sip_subprotocol_no_websocket(server: ConclaveServer) -> None:
    port, origin = web_port_and_origin(server)
    with pytest.raises(InvalidStatus):
        connect(
            f"wss://127.0.0.1:{port}/sip", ssl=context(server), origin=Origin(origin),
            open_timeout=10,
        )  # fmt: skip
    # And no WebSocket anywhere else on the listener.
    with pytest.raises(InvalidStatus):
        connect(
            f"wss://127.0.0.1:{port}/pki/ca.crl", ssl=context(server), origin=Origin(origin),
            subprotocols=[Subprotocol("sip")], open_timeout=10,
        )  # fmt: skip


def test_an_oversized_message_closes_the_websocket(server: ConclaveServer) -> None:
    port, origin = web_port_and_origin(server)
    with connect(
        f"wss://127.0.0.1:{port}/sip", ssl=context(server), origin=Origin(origin),
        subprotocols=[Subprotocol("sip")], open_timeout=10,
    ) as ws:  # fmt: skip
        ws.send("OPTIONS sip:localhost SIP/2.0\r\nX: " + "a" * 200_000 + "\r\n\r\n")
        with pytest.raises(ConnectionClosed):
            ws.recv(10)


def test_strangers_and_impostors_get_nothing_more_than_over_tls(server: ConclaveServer) -> None:
    port, origin = web_port_and_origin(server)
    mallory = SipClient("wss", port, ca=str(server.ca), server_name="localhost", origin=origin)
    # No credentials: challenged, never relayed.
    uri = "sip:bob@localhost"
    first = mallory.send(
        "MESSAGE", uri, from_user="alice", headers=["Content-Type: text/plain"], body=b"hi"
    )
    assert first.status == 407
    # Carol's credentials while claiming to be Alice: refused.
    auth = digest_header(
        first, user="carol", password=PASSWORDS["carol"], method="MESSAGE", uri=uri
    )
    refused = mallory.send(
        "MESSAGE", uri, from_user="alice", headers=["Content-Type: text/plain", auth], body=b"hi"
    )
    assert refused.status == 403
    # Registering Bob's address with Carol's credentials: refused.
    to = "sip:bob@localhost"
    first = mallory.send("REGISTER", REG_URI, from_user="bob", to=to, headers=["Expires: 600"])
    auth = digest_header(
        first, user="carol", password=PASSWORDS["carol"], method="REGISTER", uri=REG_URI
    )
    assert (
        mallory.send(
            "REGISTER", REG_URI, from_user="bob", to=to, headers=["Expires: 600", auth]
        ).status
        == 403
    )


def test_answers_go_back_on_the_websocket_whatever_the_via_says(server: ConclaveServer) -> None:
    port, origin = web_port_and_origin(server)
    client = SipClient("wss", port, ca=str(server.ca), server_name="localhost", origin=origin)
    forged = client.request("OPTIONS", "sip:localhost", from_user="alice").replace(
        f"127.0.0.1:{client.local_port}".encode(), b"203.0.113.9:5060", 1
    )
    client.send_raw(forged)
    answer = client.recv(10)  # on this WebSocket, not toward 203.0.113.9
    assert answer.status in (200, 401, 407, 403, 405, 404)


def test_off_unless_turned_on(make_server: Callable[..., ConclaveServer]) -> None:
    """``[web] enabled`` alone opens HTTPS, not SIP over WebSocket: ``[transports] ws`` does."""
    server = make_server(config={"web": WEB["web"]})
    port, origin = web_port_and_origin(server)
    with pytest.raises(InvalidStatus):
        connect(
            f"wss://127.0.0.1:{port}/sip", ssl=context(server), origin=Origin(origin),
            subprotocols=[Subprotocol("sip")], open_timeout=10,
        )  # fmt: skip
    # Nor is the browser client served: it would have nothing to talk to.
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context(server))
    connection.request("GET", "/")
    assert connection.getresponse().status == 404
    connection.close()


def test_the_client_page_runs_under_the_strict_policy(server: ConclaveServer) -> None:
    port, _origin = web_port_and_origin(server)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context(server))
    connection.request("GET", "/")
    page = connection.getresponse()
    html = page.read().decode()
    policy = page.getheader("Content-Security-Policy") or ""
    assert page.status == 200 and "default-src 'self'" in policy and "unsafe" not in policy
    assert "<script>" not in html and "<style" not in html  # nothing inline to allow
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers either
    connection.request("GET", "/client/config.json")
    config = connection.getresponse()
    assert config.status == 200 and set(json.loads(config.read())) == {"domain", "websocket"}
    connection.close()
