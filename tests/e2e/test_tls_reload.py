"""Certificate hot reload on a running `conclave serve`, with live connections.

A client keeps a TLS connection open while the certificate files are swapped
and the server is told to reload (SIGHUP through `conclave certs reload`,
and on its own by polling the files). New clients must see the new
certificate, the old connection must keep working, and a bad certificate
must be refused with the old one kept.

The probe helpers here are shared by the other test_tls_* modules.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conclave.pki import CertificateAuthority, IssuedCertificate, client_context, load_ca
from conclave.pki.leaf import SERVER_USAGES, build_leaf, generate_key, key_pem
from conclave.sip.framing import Frame, StreamFramer
from conclave.sip.message import Response
from conclave.sip.parser import parse_message

from .server import ConclaveServer, conclave

TIMEOUT = 10.0
NAMES = ("localhost", "sip.localhost")
"""What `conclave init --domain localhost --host 127.0.0.1` issues for (plus the IP)."""


def colon_hex(der: bytes) -> str:
    """The fingerprint format the server logs: SHA-256, colon-separated upper-case hex."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def fingerprint_of(cert: x509.Certificate) -> str:
    return colon_hex(cert.public_bytes(Encoding.DER))


class TlsProbe:
    """One TLS connection to the server that can send OPTIONS and report the certificate."""

    def __init__(
        self, port: int, ca: Path, cert: Path | None = None, key: Path | None = None
    ) -> None:
        context = client_context(ca, cert_path=cert, key_path=key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(TIMEOUT)
        self.framer = StreamFramer()
        self.count = 0

    @property
    def fingerprint(self) -> str:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return colon_hex(der)

    def options(self) -> int:
        """Send an OPTIONS on this connection and return the response status."""
        self.count += 1
        port = self.sock.getsockname()[1]
        message = (
            "OPTIONS sip:localhost SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bKprobe{os.urandom(6).hex()};rport\r\n"
            "Max-Forwards: 70\r\nTo: <sip:localhost>\r\n"
            f"From: <sip:probe@localhost>;tag={os.urandom(4).hex()}\r\n"
            f"Call-ID: probe-{os.urandom(6).hex()}\r\nCSeq: {self.count} OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        self.sock.sendall(message.encode())
        while True:
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("server closed the connection")
            for event in self.framer.feed(chunk):
                if isinstance(event, Frame):
                    response = parse_message(event.data, datagram=False)
                    assert isinstance(response, Response)
                    return response.status

    def close(self) -> None:
        self.sock.close()


def refused(port: int, ca: Path, cert: Path | None = None, key: Path | None = None) -> bool:
    """True when the server refuses a TLS client (in TLS 1.3 maybe only at the first read)."""
    try:
        probe = TlsProbe(port, ca, cert, key)
    except (ssl.SSLError, OSError):
        return True
    try:
        return probe.options() != 200
    except (ssl.SSLError, OSError):
        return True
    finally:
        probe.close()


def server_ca(server: ConclaveServer) -> CertificateAuthority:
    return load_ca(server.data_dir / "ca")


def install(server: ConclaveServer, issued: IssuedCertificate) -> str:
    issued.write(server.data_dir / "tls" / "server.crt", server.data_dir / "tls" / "server.key")
    return fingerprint_of(issued.certificate)


def issue(server: ConclaveServer, names: tuple[str, ...] = NAMES, **kw: Any) -> IssuedCertificate:
    return server_ca(server).issue_server(list(names), ["127.0.0.1"], **kw)


def install_expired(server: ConclaveServer) -> str:
    """A certificate from our CA, with the right names, that expired yesterday."""
    ca = server_ca(server)
    key = generate_key("ec")
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    cert = build_leaf(
        ca_cert=ca.certificate,
        ca_key=ca.private_key,
        key=key,
        common_name=NAMES[0],
        sans=[x509.DNSName(n) for n in NAMES] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usages=SERVER_USAGES,
        now=then,
        not_after=then + dt.timedelta(days=9),
    )
    tls = server.data_dir / "tls"
    (tls / "server.key").write_bytes(key_pem(key, None))
    (tls / "server.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    return fingerprint_of(cert)


def reload_cli(server: ConclaveServer) -> Any:
    return conclave("certs", "reload", "--dir", str(server.data_dir), check=False)


def is_event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


def test_swap_under_live_connection_signal_then_polling(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config={"tls": {"reload_poll": "200ms"}})
    port = server.ports["tls"]
    startup = server.wait_for(is_event("certificate reloaded", trigger="startup"))
    old = TlsProbe(port, server.ca)
    try:
        assert old.fingerprint == startup["fingerprint"]
        assert old.options() == 200

        # 1. SIGHUP through the CLI, which reports the outcome.
        first = install(server, issue(server))
        result = reload_cli(server)
        assert result.returncode == 0, result.stderr
        assert f"fingerprint: SHA256 {first}" in result.stdout
        server.wait_for(is_event("certificate reloaded", trigger="signal", fingerprint=first))
        new = TlsProbe(port, server.ca)
        assert new.fingerprint == first != startup["fingerprint"]
        assert new.options() == 200
        new.close()
        assert old.options() == 200  # the connection from before still works
        assert old.fingerprint == startup["fingerprint"]

        # 2. No signal: the server notices the changed files by itself.
        second = install(server, issue(server))
        server.wait_for(is_event("certificate reloaded", trigger="file change", fingerprint=second))
        newer = TlsProbe(port, server.ca)
        assert newer.fingerprint == second
        assert newer.options() == 200
        newer.close()
        assert old.options() == 200
    finally:
        old.close()


def test_bad_certificates_are_refused_and_the_old_one_kept(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server()
    port = server.ports["tls"]
    kept = server.wait_for(is_event("certificate reloaded", trigger="startup"))["fingerprint"]
    live = TlsProbe(port, server.ca)
    tls = server.data_dir / "tls"
    cases: list[tuple[str, Callable[[], object], str]] = [
        (
            "key mismatch",
            lambda: (tls / "server.key").write_bytes(issue(server).key_pem()),
            "does not match certificate",
        ),
        ("expired", lambda: install_expired(server), "expired on "),
        (
            "wrong names",
            lambda: install(server, issue(server, ("elsewhere.test",))),
            "does not cover required names localhost, sip.localhost",
        ),
    ]
    try:
        for case, spoil, reason in cases:
            spoil()
            result = reload_cli(server)
            assert result.returncode == 1, case
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                "conclave: error: certificate reload refused: "
            ), result.stderr
            assert reason in lines[0] and f"still serving SHA256 {kept}" in lines[0], case
            event = server.wait_for(
                lambda e, reason=reason: (
                    e.get("event") == "certificate reload refused" and reason in e.get("reason", "")
                )
            )
            assert event["fingerprint"] == kept and event["level"] == "error"
            probe = TlsProbe(port, server.ca)
            assert probe.fingerprint == kept, case
            assert probe.options() == 200
            probe.close()
            assert live.options() == 200
    finally:
        live.close()
