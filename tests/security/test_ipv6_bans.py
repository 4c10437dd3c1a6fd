"""An IPv6 attacker cannot shake off a ban by changing address inside its /64.

One IPv6 host normally holds a whole /64 and may send from any address in it.
The attacker floods the server from one address until it is banned, then
comes back from another address of the same /64: the server must refuse it
too. Loopback has a single address (::1), so the flood is sent from ::2
(``IPV6_FREEBIND`` lets a socket bind an address the host does not hold; the
datagrams still reach the server on lo, with ::2 as their source) and the
comeback is a TCP connection from ::1, which the server refuses at accept,
before reading a byte. The /64 arithmetic itself is unit-tested in
tests/transport/test_guard.py.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conclave.sip.framing import Frame, StreamFramer
from conclave.sip.message import Response
from conclave.sip.parser import parse_message
from tests.e2e.server import CONCLAVE, START_TIMEOUT, ConclaveServer
from tests.e2e.sipclient import TIMEOUT

from .conftest import PASSWORDS

IPV6_FREEBIND = 78
"""Linux's IPV6_FREEBIND (include/uapi/linux/in6.h; not exported by the socket module)."""

BURST = 3


@dataclass
class Ipv6Server(ConclaveServer):
    """A server listening on ::1 (the harness's listener parsing assumes IPv4 hosts)."""

    def start(self) -> Ipv6Server:
        self._spawn([*CONCLAVE, "serve", "--dir", str(self.data_dir)])
        ready = self.wait_for(lambda e: e.get("event") == "ready", START_TIMEOUT)
        for item in ready.get("listeners", []):
            transport, rest = item.split(":", 1)
            self.ports[transport] = int(rest.rsplit(":", 1)[1])
        return self


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Ipv6Server]:
    srv = Ipv6Server(
        tmp_path / "data",
        transports="tls,udp,tcp",
        users=dict(PASSWORDS),
        config={
            "transports": {"bind": "::1"},
            "limits": {"requests_per_second": 1, "burst": BURST, "ban_seconds": "10m"},
        },
    )
    srv.init().start()
    try:
        yield srv
    finally:
        srv.stop()


def options(transport: str, host: str, port: int) -> bytes:
    branch = "z9hG4bK" + os.urandom(8).hex()
    return (
        "OPTIONS sip:localhost SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} [{host}]:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:mallory@localhost>;tag={os.urandom(4).hex()}\r\n"
        "To: <sip:localhost>\r\n"
        f"Call-ID: {os.urandom(8).hex()}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def tcp_options(port: int) -> Response | None:
    """OPTIONS over a new TCP connection from ::1; None if the server closes it unanswered."""
    with socket.create_connection(("::1", port), timeout=TIMEOUT) as sock:
        local = sock.getsockname()[1]
        framer = StreamFramer()
        try:
            sock.sendall(options("TCP", "::1", local))
            while True:
                chunk = sock.recv(65535)
                if not chunk:
                    return None
                for event in framer.feed(chunk):
                    if isinstance(event, Frame):
                        resp = parse_message(event.data, datagram=False)
                        assert isinstance(resp, Response)
                        return resp
        except (ConnectionResetError, BrokenPipeError):
            return None


def test_ban_covers_the_attackers_whole_64(server: Ipv6Server) -> None:
    # The path works from ::1 before the attack.
    before = tcp_options(server.ports["tcp"])
    assert before is not None and before.status == 200

    # Flood from ::2 over UDP until banned.
    attacker = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        attacker.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        attacker.bind(("::2", 0))
        port = attacker.getsockname()[1]
        for _ in range(BURST * 4):
            attacker.sendto(options("UDP", "::2", port), ("::1", server.ports["udp"]))
    finally:
        attacker.close()
    banned = server.wait_for(lambda e: e.get("event") == "source banned")
    assert banned["source"] == "::2"

    # Back from ::1, another address of ::/64, another transport: refused at accept.
    assert tcp_options(server.ports["tcp"]) is None
