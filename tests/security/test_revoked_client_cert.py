"""A user's client certificate is revoked while the user is signed in with it.

The attacker holds a stolen certificate and keeps the TLS connection it
authenticated open. Revocation (``conclave certs revoke``, then the server's
reload) must end that session, not only refuse the next handshake: the
connection is closed, the registration it made is removed, and nothing more
can be sent on it. Other users' connections are untouched.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from tests.e2e.server import ConclaveServer, conclave
from tests.e2e.sipclient import TIMEOUT, SipClient
from tests.e2e.test_tls_reload import TlsProbe


def cert_client(server: ConclaveServer, cert: Path, key: Path) -> SipClient:
    """A SIP client over TLS that presents ``cert`` (the user's device)."""

    class CertClient(SipClient):
        def __post_init__(self) -> None:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
            context = ssl.create_default_context(cafile=str(server.ca))
            context.load_cert_chain(str(cert), str(key))
            self._sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            self._sock.settimeout(TIMEOUT)

    return CertClient("tls", server.ports["tls"])


def register(client: SipClient, user: str) -> int:
    return client.send(
        "REGISTER", "sip:localhost", from_user=user, to=f"sip:{user}@localhost",
        headers=["Expires: 600"],
    ).status  # fmt: skip


def test_revocation_closes_the_connection_the_certificate_opened(
    make_server: Callable[..., ConclaveServer],
) -> None:
    server = make_server(config={"tls": {"client_auth": "optional"}})
    data = server.data_dir
    issued = {}
    for user in ("alice", "bob"):
        out = conclave("certs", "issue", "--dir", str(data), "--client", user).stdout
        issued[user] = next(line for line in out.splitlines() if "certificate" in line).split()[3]
    clients = data / "tls" / "clients"
    stolen = cert_client(server, clients / "alice.crt", clients / "alice.key")
    bystander = cert_client(server, clients / "bob.crt", clients / "bob.key")
    plain = TlsProbe(server.ports["tls"], server.ca)  # no certificate at all
    try:
        assert register(stolen, "alice") == 200  # the certificate alone signs alice in
        assert register(bystander, "bob") == 200

        revoked = conclave(
            "certs", "revoke", issued["alice"], "--dir", str(data), "--reason", "keyCompromise"
        )  # fmt: skip
        assert revoked.returncode == 0 and "told the server" in revoked.stdout, revoked.stderr

        closed = server.wait_for(
            lambda e: e.get("event") == "connection closed: certificate revoked"
        )
        assert closed["serial"] == issued["alice"] and closed["level"] == "warning"
        assert "alice@localhost" in closed["subject"]
        removed = server.wait_for(lambda e: e.get("event") == "flow closed; bindings removed")
        assert removed["flow"] == closed["flow"]
        # The attacker's session is over: the server has closed it.
        assert stolen.recv_raw() == b""
        # Everyone else carries on over their own connections.
        assert register(bystander, "bob") == 200
        assert plain.options() == 200
        assert not [
            e
            for e in server.lines
            if e.get("event") == "connection closed: certificate revoked"
            and e.get("serial") != issued["alice"]
        ]
    finally:
        for client in (stolen, bystander):
            client.close()
        plain.close()
