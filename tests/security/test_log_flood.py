"""An attacker's session against the log: garbage and forged responses from many sources.

Over UDP a source address costs nothing to forge, so the per-source rate limit
cannot stop a flood spread over many addresses. Every datagram that does not
parse, and every response nobody asked for, would otherwise be one log line:
the flood would fill the disk and bury what matters. Here 10 sources each
stay under the per-source limit, 200 bad datagrams in all: the log gets at
most the burst of each kind (conclave.ops.throttle), no source is banned, and
the server still answers its users.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conclave.ops.throttle import FLOOD_LOG_BURST
from tests.e2e.server import ConclaveServer
from tests.e2e.sipclient import SipClient

SOURCES = [f"127.0.0.{n}" for n in range(61, 71)]
PER_SOURCE = 20
"""Under the default burst of 50 per source: no source gets banned."""


@pytest.fixture
def server(make_server: Callable[..., ConclaveServer]) -> ConclaveServer:
    return make_server(transports="tls,udp")


def garbage(n: int) -> bytes:
    return b"INVITE sip:bob@localhost SIP/2.0\r\nVia: nonsense " + str(n).encode() + b"\r\n\r\n"


def stray(port: int, n: int) -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-forged-{n}\r\n"
        f"From: <sip:a@localhost>;tag=a{n}\r\nTo: <sip:b@localhost>;tag=b{n}\r\n"
        f"Call-ID: forged-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_spread_flood_does_not_flood_the_log(server: ConclaveServer) -> None:
    port = server.ports["udp"]
    for source in SOURCES:
        attacker = SipClient("udp", port, host=source)
        for n in range(PER_SOURCE // 2):
            attacker.send_raw(garbage(n))
            attacker.send_raw(stray(port, n))
        attacker.close()
    # One socket, handled in order: once this is answered, the flood has been read.
    user = SipClient("udp", port)
    assert user.send("OPTIONS", "sip:localhost", from_user="alice").status in (200, 407)
    for event in ("malformed message", "stray response dropped"):
        lines = server.events(event)
        assert 1 <= len(lines) <= FLOOD_LOG_BURST, (event, len(lines))
    assert not server.events("source banned")
