"""Server-to-server mutual TLS over real sockets: only the expected, valid peer gets in."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conclave.pki import (
    CertificateAuthority,
    PkiError,
    client_context,
    create_ca,
    mutual_client_context,
    mutual_server_context,
    verify_peer_name,
)
from tests.pki.tlsnet import accepted, connect, echo_server, run


@dataclass
class Pool:
    """Our CA, this server (fe1) and files for any peer we issue."""

    dir: Path
    ca: CertificateAuthority

    def peer(self, name: str, ca: CertificateAuthority | None = None) -> tuple[Path, Path]:
        issuer = ca or self.ca
        issued = issuer.issue_server([name])
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        issued.write(cert, key)
        return cert, key

    def server_ctx(self, name: str = "fe1.example.test") -> ssl.SSLContext:
        cert, key = self.peer(name)
        return mutual_server_context(
            cert, key, ca_path=self.ca.cert_path, crl_path=self.ca.crl_path
        )

    def client_ctx(self, cert: Path, key: Path) -> ssl.SSLContext:
        return mutual_client_context(
            cert, key, ca_path=self.ca.cert_path, crl_path=self.ca.crl_path
        )


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path, create_ca(tmp_path / "ca", common_name="Pool CA"))


def expect(name: str) -> Any:
    """The inbound check a server applies once the handshake is done."""

    def check(peercert: dict[str, Any] | None) -> None:
        verify_peer_name(peercert, name)

    return check


def test_expected_peer_is_accepted(pool: Pool) -> None:
    async def scenario() -> None:
        async with echo_server(pool.server_ctx(), expect("fe2.example.test")) as server:
            ctx = pool.client_ctx(*pool.peer("fe2.example.test"))
            assert await accepted(server.port, ctx, "fe1.example.test")
            peer = server.peers[-1]
            assert peer is not None and peer["subjectAltName"] == (("DNS", "fe2.example.test"),)

    run(scenario)


def test_peer_with_wrong_name_is_refused_inbound(pool: Pool) -> None:
    async def scenario() -> None:
        async with echo_server(pool.server_ctx(), expect("fe2.example.test")) as server:
            ctx = pool.client_ctx(*pool.peer("intruder.example.test"))
            assert not await accepted(server.port, ctx, "fe1.example.test")
            assert server.peers[-1] is not None  # verified chain, but the wrong peer

    run(scenario)


def test_peer_from_another_ca_is_refused(pool: Pool, tmp_path: Path) -> None:
    stranger = create_ca(tmp_path / "stranger", common_name="Stranger CA")

    async def scenario() -> None:
        async with echo_server(pool.server_ctx(), expect("fe2.example.test")) as server:
            cert, key = pool.peer("fe2.example.test", ca=stranger)
            # The stranger trusts our CA, so only our side can refuse.
            ctx = mutual_client_context(
                cert, key, ca_path=pool.ca.cert_path, crl_path=pool.ca.crl_path
            )
            assert not await accepted(server.port, ctx, "fe1.example.test")
            assert server.peers == []  # the handshake itself failed

    run(scenario)


def test_revoked_peer_is_refused(pool: Pool) -> None:
    cert, key = pool.peer("fe2.example.test")
    ctx = pool.client_ctx(cert, key)
    [entry] = [e for e in pool.ca.index.entries() if e.dns_names == ("fe2.example.test",)]
    serial = entry.serial

    async def scenario() -> None:
        async with echo_server(pool.server_ctx(), expect("fe2.example.test")) as server:
            assert await accepted(server.port, ctx, "fe1.example.test")
        pool.ca.revoke(serial, reason="keyCompromise")
        # A server context built after the revocation loads the new CRL.
        async with echo_server(pool.server_ctx(), expect("fe2.example.test")) as server:
            assert not await accepted(server.port, ctx, "fe1.example.test")
            assert server.peers == []

    run(scenario)


def test_peer_without_certificate_is_refused(pool: Pool) -> None:
    async def scenario() -> None:
        async with echo_server(pool.server_ctx(), expect("fe2.example.test")) as server:
            ctx = client_context(pool.ca.cert_path)
            assert not await accepted(server.port, ctx, "fe1.example.test")

    run(scenario)


def test_outbound_to_wrong_name_is_refused(pool: Pool) -> None:
    """Outbound: server_hostname is the peer we meant to reach; OpenSSL checks it."""

    async def scenario() -> None:
        async with echo_server(pool.server_ctx("intruder.example.test")) as server:
            ctx = pool.client_ctx(*pool.peer("fe2.example.test"))
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                await connect(server.port, ctx, "fe1.example.test")

    run(scenario)


def test_outbound_to_revoked_server_is_refused(pool: Pool) -> None:
    cert, key = pool.peer("fe1.example.test")
    server_ctx = mutual_server_context(
        cert, key, ca_path=pool.ca.cert_path, crl_path=pool.ca.crl_path
    )
    serial = next(e for e in pool.ca.index.entries() if e.dns_names == ("fe1.example.test",))
    pool.ca.revoke(serial.serial)
    client = pool.client_ctx(*pool.peer("fe2.example.test"))

    async def scenario() -> None:
        async with echo_server(server_ctx) as server:
            with pytest.raises(ssl.SSLCertVerificationError, match="revoked"):
                await connect(server.port, client, "fe1.example.test")

    run(scenario)


def test_outbound_from_another_ca_is_refused(pool: Pool, tmp_path: Path) -> None:
    stranger = create_ca(tmp_path / "stranger", common_name="Stranger CA")
    cert, key = pool.peer("fe1.example.test", ca=stranger)
    server_ctx = mutual_server_context(
        cert, key, ca_path=stranger.cert_path, crl_path=stranger.crl_path
    )

    async def scenario() -> None:
        async with echo_server(server_ctx) as server:
            ctx = pool.client_ctx(*pool.peer("fe2.example.test"))
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(server.port, ctx, "fe1.example.test")

    run(scenario)


def test_mutual_contexts_check_crl_leaf(pool: Pool) -> None:
    ctx = pool.server_ctx()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    client = pool.client_ctx(*pool.peer("fe2.example.test"))
    assert client.check_hostname and client.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


def test_missing_crl_is_an_error(pool: Pool) -> None:
    cert, key = pool.peer("fe1.example.test")
    pool.ca.crl_path.unlink()
    with pytest.raises(PkiError, match="CRL not found"):
        mutual_server_context(cert, key, ca_path=pool.ca.cert_path, crl_path=pool.ca.crl_path)
