"""The server starts, answers OPTIONS over each transport, and stops gracefully."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from .server import ConclaveServer


def options(target_port: int, transport: str, ca: str | None = None) -> str:
    msg = (
        "OPTIONS sip:localhost SIP/2.0\r\n"
        "Via: SIP/2.0/{T} 127.0.0.1:9;branch=z9hG4bKsmoke{T};rport\r\n"
        "Max-Forwards: 70\r\nTo: <sip:localhost>\r\nFrom: <sip:probe@localhost>;tag=1\r\n"
        "Call-ID: smoke-{T}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).replace("{T}", transport.upper())
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            s.sendto(msg.encode(), ("127.0.0.1", target_port))
            return s.recv(65535).decode()
    raw = socket.create_connection(("127.0.0.1", target_port), timeout=10)
    if transport == "tls":
        ctx = ssl.create_default_context(cafile=ca)
        raw = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    with raw:
        raw.sendall(msg.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = raw.recv(65535)
            if not chunk:
                break
            data += chunk
        return data.decode()


def test_options_on_every_transport_and_graceful_stop(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(transports="tls,tcp,udp")
    for transport in ("udp", "tcp", "tls"):
        reply = options(server.ports[transport], transport, str(server.ca))
        assert reply.startswith("SIP/2.0 200 "), reply
        # Presence is on by default in Standard Edition (test_presence checks it can be off).
        assert "Allow: " in reply and "PUBLISH, SUBSCRIBE" in reply
        assert "Allow-Events: presence, presence.winfo" in reply
    assert server.stop() == 0
    assert server.events("stopped")


def test_only_tls_listens_by_default(make_server: Callable[..., ConclaveServer]) -> None:
    server = make_server()
    assert set(server.ports) == {"tls"}
