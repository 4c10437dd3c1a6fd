"""The running server judges every RFC 4475 / RFC 5118 torture message as the RFC says.

Each message is sent over UDP, followed by a marker OPTIONS. Everything the
server sends back before the marker's 200 is its answer to the torture
message (loopback UDP from a single event loop keeps the order), so no test
ever waits for "nothing to happen".
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from tests.sip.torture import EXPECTED, load_cases

from .server import ConclaveServer

CASES = load_cases()


def marker(port: int, call_id: str) -> bytes:
    return (
        "OPTIONS sip:localhost SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
        "Max-Forwards: 70\r\nTo: <sip:localhost>\r\n"
        "From: <sip:probe@localhost>;tag=m\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answers(sock: socket.socket, server_port: int, data: bytes) -> list[bytes]:
    call_id = "marker-" + os.urandom(6).hex()
    sock.sendto(data, ("127.0.0.1", server_port))
    sock.sendto(marker(sock.getsockname()[1], call_id), ("127.0.0.1", server_port))
    got: list[bytes] = []
    while True:
        reply = sock.recv(65535)
        if call_id.encode() in reply:
            return got
        got.append(reply)


def test_server_judges_every_torture_message(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server(
        transports="tls,udp", config={"limits": {"requests_per_second": 10000, "burst": 10000}}
    )
    port = server.ports["udp"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(15)
        for case in CASES:
            data = case.path.read_bytes()
            replies = answers(sock, port, data)
            statuses = [int(r.split(b" ", 2)[1]) for r in replies if r.startswith(b"SIP/2.0 ")]
            final = [s for s in statuses if s >= 200]
            kind, status = EXPECTED[case.id]
            is_response = data.lstrip(b"\r\n").startswith(b"SIP/")
            if is_response:
                # Responses are never answered; stray ones are dropped.
                assert final == [], (case.id, statuses)
            elif kind == "malformed":
                # Answered 400 when the headers to route an answer survive, else dropped.
                assert final in ([], [400]), (case.id, statuses)
            elif kind == "reject":
                assert final == [status], (case.id, statuses)
            else:
                # Well formed and acceptable: whatever routing says, never a parse verdict.
                assert all(s not in (400, 505, 416, 420) for s in final), (case.id, statuses)
    # The server survived all of it.
    assert server.proc is not None and server.proc.poll() is None
