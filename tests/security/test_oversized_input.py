"""Oversized input against a server whose ``[limits] max_message_size`` is lowered.

The attacker sends messages just over the configured limit (well under the
parser's 64 KiB hard limit, so only the configured value can stop them): over
TCP the connection is closed as soon as Content-Length shows the message is too
big, before its body is read; over UDP the datagram is dropped, counted and
logged, and the server keeps answering everyone else. A message of exactly the
limit is still served.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient

LIMIT = 2048


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,udp,tcp", config={"limits": {"max_message_size": "2KiB"}})


def options(client: SipClient, size: int) -> bytes:
    """An OPTIONS to the server of exactly ``size`` octets (a text body pads it)."""
    empty = client.request(
        "OPTIONS", "sip:localhost", from_user="mallory", headers=["Content-Type: text/plain"]
    )
    pad = size - len(empty)
    # Content-Length grows by the digits of ``pad`` less the one "0".
    pad -= len(str(pad)) - 1
    data = client.request(
        "OPTIONS",
        "sip:localhost",
        from_user="mallory",
        headers=["Content-Type: text/plain"],
        body=b"x" * pad,
    )
    assert len(data) == size, len(data)
    return data


def test_stream_message_over_the_limit_closes_the_connection(server: ConclaveServer) -> None:
    client = SipClient("tcp", server.ports["tcp"])
    try:
        client.send_raw(options(client, LIMIT))
        assert client.final().status == 200
        too_big = options(client, LIMIT + 1)
        head = too_big[: too_big.index(b"\r\n\r\n") + 4]
        client.send_raw(head)  # the body never needs to arrive
        assert client.recv_raw() == b""  # closed, nothing answered
    finally:
        client.close()
    error = server.wait_for(lambda e: e.get("event") == "framing error")
    assert error["status"] == 413
    assert error["reason"] == "message too large"


def test_udp_datagram_over_the_limit_is_dropped_and_logged(server: ConclaveServer) -> None:
    client = SipClient("udp", server.ports["udp"])
    try:
        for _ in range(3):
            client.send_raw(options(client, LIMIT + 1))
        # Loopback keeps datagrams in order and the server answers in order:
        # had any oversized one been answered, that answer would come first.
        client.send_raw(options(client, LIMIT))
        assert client.final().status == 200
    finally:
        client.close()
    dropped = server.wait_for(lambda e: e.get("event") == "oversized datagram dropped")
    assert dropped["size"] == LIMIT + 1
    assert dropped["limit"] == LIMIT
    assert server.events("oversized datagram dropped") == [dropped]  # rate-limited
