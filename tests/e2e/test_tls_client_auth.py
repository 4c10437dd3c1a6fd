"""Client certificates on a running server (`[tls] client_auth = "optional"`) and revocation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from .server import ConclaveServer, conclave
from .test_tls_reload import TlsProbe, is_event, refused


def test_revoked_client_certificate_is_refused(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config={"tls": {"client_auth": "optional"}})
    port, data = server.ports["tls"], server.data_dir
    issued = conclave("certs", "issue", "--dir", str(data), "--client", "alice")
    assert "issued client certificate" in issued.stdout
    cert, key = data / "tls" / "clients" / "alice.crt", data / "tls" / "clients" / "alice.key"

    with_cert = TlsProbe(port, server.ca, cert, key)
    assert with_cert.options() == 200
    without = TlsProbe(port, server.ca)
    assert without.options() == 200
    without.close()

    serial = next(line for line in issued.stdout.splitlines() if "certificate" in line).split()[3]
    revoked = conclave("certs", "revoke", serial, "--dir", str(data), "--reason", "keyCompromise")
    assert "told the server" in revoked.stdout
    server.wait_for(is_event("certificate reloaded", trigger="signal"))

    assert refused(port, server.ca, cert, key)
    failure = server.wait_for(lambda e: e.get("event") == "tls handshake failed")
    assert "revoked" in failure["reason"]
    assert not refused(port, server.ca)  # clients without a certificate are unaffected
    # The session the certificate opened is torn down too (issue 12, item 7).
    server.wait_for(lambda e: e.get("event") == "connection closed: certificate revoked")
    with contextlib.suppress(OSError):  # closed: exactly what should happen
        assert with_cert.options() != 200
    with_cert.close()


def test_client_certificates_not_requested_by_default(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server()
    data = server.data_dir
    conclave("certs", "issue", "--dir", str(data), "--client", "alice")
    probe = TlsProbe(
        server.ports["tls"],
        server.ca,
        data / "tls" / "clients" / "alice.crt",
        data / "tls" / "clients" / "alice.key",
    )
    assert probe.options() == 200
    probe.close()


def test_client_certificate_signs_a_user_in_without_digest(
    make_server: Callable[..., ConclaveServer],
) -> None:
    import ssl

    from .sipclient import SipClient

    server = make_server(config={"tls": {"client_auth": "optional"}})
    data = server.data_dir
    conclave("certs", "issue", "--dir", str(data), "--client", "alice")
    cert, key = data / "tls" / "clients" / "alice.crt", data / "tls" / "clients" / "alice.key"

    class CertClient(SipClient):
        def __post_init__(self) -> None:
            import socket

            raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            ctx = ssl.create_default_context(cafile=str(server.ca))
            ctx.load_cert_chain(str(cert), str(key))
            self._sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            self._sock.settimeout(10)

    alice = CertClient("tls", server.ports["tls"])
    reg = alice.send(
        "REGISTER",
        "sip:localhost",
        from_user="alice",
        to="sip:alice@localhost",
        headers=["Expires: 600"],
    )
    assert reg.status == 200  # no 401: the certificate is alice's credential
    # The certificate names alice only: claiming to be bob still needs bob's password.
    other = alice.send(
        "REGISTER",
        "sip:localhost",
        from_user="bob",
        to="sip:bob@localhost",
        headers=["Expires: 600"],
    )
    assert other.status == 401


def test_sips_request_over_plain_transport_is_refused(
    make_server: Callable[..., ConclaveServer],
) -> None:
    from .sipclient import SipClient

    server = make_server(transports="tls,udp")
    client = SipClient("udp", server.ports["udp"])
    resp = client.send(
        "MESSAGE",
        "sips:bob@localhost",
        from_user="alice",
        headers=["Content-Type: text/plain"],
        body=b"x",
    )
    assert resp.status == 403
    assert "SIPS" in resp.reason
