"""TLS contexts: real handshakes over loopback sockets, and the policy's refusals."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conclave.pki import PkiError, client_context, create_ca, server_context
from tests.pki.conftest import ServerFiles

TIMEOUT = 5.0


@dataclass
class Outcome:
    """What one side of a handshake saw: data read back, or the exception raised."""

    data: bytes | None = None
    error: BaseException | None = None
    version: str | None = None
    peer_cert: Any = None


def converse(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> tuple[Outcome, Outcome]:
    """Handshake over a socketpair; the client sends b"ping", the server answers b"pong"."""
    left, right = socket.socketpair()
    left.settimeout(TIMEOUT)
    right.settimeout(TIMEOUT)
    server, client = Outcome(), Outcome()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                server.version = tls.version()
                server.peer_cert = tls.getpeercert() or None
                server.data = tls.recv(4)
                tls.sendall(b"pong")
        except (OSError, ssl.SSLError) as exc:
            server.error = exc
            left.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname=server_hostname) as tls:
            client.version = tls.version()
            tls.sendall(b"ping")
            client.data = tls.recv(4)
            if not client.data:
                raise ConnectionResetError("server closed the connection")
    except (OSError, ssl.SSLError) as exc:
        client.error = exc
        right.close()
    thread.join(TIMEOUT)
    return server, client


def test_handshake_verifies_server_name(server_files: ServerFiles) -> None:
    server, client = converse(
        server_context(server_files.cert, server_files.key),
        client_context(server_files.ca_cert),
        "sip.example.test",
    )
    assert client.error is None and server.error is None
    assert server.data == b"ping" and client.data == b"pong"
    assert client.version == "TLSv1.3"


def test_handshake_by_ip_address(server_files: ServerFiles) -> None:
    server, client = converse(
        server_context(server_files.cert, server_files.key),
        client_context(server_files.ca_cert),
        "127.0.0.1",
    )
    assert server.data == b"ping" and client.data == b"pong"


def test_wrong_server_name_is_refused(server_files: ServerFiles) -> None:
    _, client = converse(
        server_context(server_files.cert, server_files.key),
        client_context(server_files.ca_cert),
        "other.example.test",
    )
    assert isinstance(client.error, ssl.SSLCertVerificationError)


def test_untrusted_ca_is_refused(server_files: ServerFiles, tmp_path: Path) -> None:
    other = create_ca(tmp_path, common_name="Other CA")
    _, client = converse(
        server_context(server_files.cert, server_files.key),
        client_context(other.cert_path),
        "sip.example.test",
    )
    assert isinstance(client.error, ssl.SSLCertVerificationError)


def test_tls12_uses_aead_forward_secret_cipher(server_files: ServerFiles) -> None:
    client_ctx = client_context(server_files.ca_cert)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server_ctx = server_context(server_files.cert, server_files.key)
    server, client = converse(server_ctx, client_ctx, "sip.example.test")
    assert client.error is None and client.version == "TLSv1.2"
    assert server.version == "TLSv1.2" and server.data == b"ping"
    names = {c["name"] for c in server_ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(n.startswith("ECDHE-") for n in names)
    assert all("GCM" in n or "CHACHA20" in n for n in names)


def legacy_client(ca_cert: Path) -> ssl.SSLContext:
    """A client willing to speak what our policy forbids, to check the server refuses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_cert)
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_is_refused(server_files: ServerFiles) -> None:
    client_ctx = legacy_client(server_files.ca_cert)
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    server, client = converse(
        server_context(server_files.cert, server_files.key), client_ctx, "sip.example.test"
    )
    assert isinstance(server.error, ssl.SSLError)
    assert server.error.reason == "UNSUPPORTED_PROTOCOL"
    assert client.error is not None and client.data is None


def test_tls12_cbc_cipher_is_refused(server_files: ServerFiles) -> None:
    client_ctx = legacy_client(server_files.ca_cert)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0")
    server, client = converse(
        server_context(server_files.cert, server_files.key), client_ctx, "sip.example.test"
    )
    assert isinstance(server.error, ssl.SSLError)
    assert server.error.reason == "NO_SHARED_CIPHER"
    assert client.error is not None


def test_server_policy_options(server_files: ServerFiles) -> None:
    context = server_context(server_files.cert, server_files.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    for option in (
        ssl.OP_NO_COMPRESSION,
        ssl.OP_NO_RENEGOTIATION,
        ssl.OP_CIPHER_SERVER_PREFERENCE,
        ssl.OP_NO_TICKET,
    ):
        assert context.options & option
    assert context.num_tickets == 0
    assert context.verify_mode == ssl.CERT_NONE


def test_mutual_tls(server_files: ServerFiles, tmp_path: Path) -> None:
    peer = server_files.ca.issue_server(["peer.example.test"])
    peer.write(tmp_path / "peer.crt", tmp_path / "peer.key")
    server_ctx = server_context(
        server_files.cert,
        server_files.key,
        ca_path=server_files.ca_cert,
        require_client_cert=True,
    )
    client_ctx = client_context(
        server_files.ca_cert, cert_path=tmp_path / "peer.crt", key_path=tmp_path / "peer.key"
    )
    server, client = converse(server_ctx, client_ctx, "sip.example.test")
    assert client.error is None and client.data == b"pong"
    assert server.peer_cert is not None
    assert server.peer_cert["subjectAltName"] == (("DNS", "peer.example.test"),)


def test_mutual_tls_without_client_certificate_fails(server_files: ServerFiles) -> None:
    server_ctx = server_context(
        server_files.cert,
        server_files.key,
        ca_path=server_files.ca_cert,
        require_client_cert=True,
    )
    server, client = converse(server_ctx, client_context(server_files.ca_cert), "sip.example.test")
    assert isinstance(server.error, ssl.SSLError)
    assert server.error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert client.error is not None


def test_require_client_cert_needs_ca(server_files: ServerFiles) -> None:
    with pytest.raises(PkiError, match="needs a CA file"):
        server_context(server_files.cert, server_files.key, require_client_cert=True)


def test_server_context_errors(server_files: ServerFiles, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="certificate not found"):
        server_context(tmp_path / "missing.crt", server_files.key)
    with pytest.raises(PkiError, match="key not found"):
        server_context(server_files.cert, tmp_path / "missing.key")
    other = server_files.ca.issue_server(["x.test"])
    other.write(tmp_path / "x.crt", tmp_path / "x.key")
    with pytest.raises(PkiError, match="does not match certificate"):
        server_context(server_files.cert, tmp_path / "x.key")


def test_encrypted_server_key(server_files: ServerFiles, tmp_path: Path) -> None:
    leaf = server_files.ca.issue_server(["sip.example.test"])
    leaf.write(tmp_path / "s.crt", tmp_path / "s.key", passphrase=b"secret")
    server_context(tmp_path / "s.crt", tmp_path / "s.key", key_passphrase=b"secret")
    with pytest.raises(PkiError, match="wrong or missing passphrase"):
        server_context(tmp_path / "s.crt", tmp_path / "s.key", key_passphrase=b"wrong")


def test_asyncio_loopback_round_trip(server_files: ServerFiles) -> None:
    async def scenario() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()
            writer.write(line.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(
            handle, "127.0.0.1", 0, ssl=server_context(server_files.cert, server_files.key)
        )
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=client_context(server_files.ca_cert),
                server_hostname="sip.example.test",
            )
            writer.write(b"options sip:example.test\n")
            reply = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return reply

    assert asyncio.run(asyncio.wait_for(scenario(), TIMEOUT)) == b"OPTIONS SIP:EXAMPLE.TEST\n"
