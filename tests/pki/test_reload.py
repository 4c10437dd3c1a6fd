"""ServerTls: hot reload over real sockets, refusals that keep the old certificate, memory."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from conclave.pki import PkiError, client_context, create_ca
from conclave.pki.reload import ServerTls, read_status
from tests.pki.conftest import REQUIRED, Deployment, RecordingLogger
from tests.pki.tlsnet import accepted, connect, der_fingerprint, echo_server, run


def make(deployment: Deployment, **kwargs: bool) -> tuple[ServerTls, RecordingLogger]:
    log = RecordingLogger()
    return ServerTls(deployment.files(**kwargs), logger=log), log


def test_startup_validates_and_logs(deployment: Deployment) -> None:
    tls, log = make(deployment, status=True)
    assert tls.info.dns_names == ("sip.example.test", "example.test")
    [event] = log.named("certificate reloaded")
    assert event["trigger"] == "startup"
    assert event["fingerprint"] == tls.info.sha256_fingerprint
    status = read_status(deployment.root / "tls-status.json")
    assert status is not None
    assert status["outcome"] == "reloaded" and status["pid"] == os.getpid()


def test_startup_refuses_bad_certificate(deployment: Deployment) -> None:
    deployment.install(deployment.issue(("other.example.test",)))
    with pytest.raises(PkiError, match=r"does not cover required names sip\.example\.test"):
        make(deployment)


def test_new_clients_see_new_certificate_old_connection_keeps_working(
    deployment: Deployment,
) -> None:
    tls, log = make(deployment)
    client_ctx = client_context(deployment.ca.cert_path)
    first = deployment.cert.read_bytes()

    async def scenario() -> None:
        async with echo_server(tls.context) as server:
            old = await connect(server.port, client_ctx, "sip.example.test")
            assert await old.echo(b"before") == b"before"
            before = old.fingerprint
            replacement = deployment.install(deployment.issue())
            outcome = tls.reload("signal")
            assert outcome.reloaded and outcome.reason == ""
            new = await connect(server.port, client_ctx, "sip.example.test")
            assert new.fingerprint == der_fingerprint(replacement.certificate)
            assert new.fingerprint != before
            assert await new.echo(b"new") == b"new"
            # The connection made before the reload is untouched.
            assert await old.echo(b"after") == b"after"
            assert old.fingerprint == before
            await old.close()
            await new.close()

    run(scenario)
    assert deployment.cert.read_bytes() != first
    assert [e["trigger"] for e in log.named("certificate reloaded")] == ["startup", "signal"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("key mismatch", "does not match certificate"),
        ("wrong names", "does not cover required names sip.example.test, example.test"),
        ("other CA", "does not chain to a trusted root"),
        ("revoked", "is revoked"),
        ("garbage", "does not contain a PEM certificate"),
        ("missing key", "key not found"),
        ("encrypted key", "is encrypted: a passphrase is needed"),
    ],
)
def test_bad_certificate_is_refused_and_old_one_kept(
    deployment: Deployment, tmp_path: Path, case: str, reason: str
) -> None:
    tls, log = make(deployment, status=True)
    kept = tls.info.sha256_fingerprint
    if case == "key mismatch":
        other = deployment.issue()
        deployment.key.write_bytes(other.key_pem())
    elif case == "wrong names":
        deployment.install(deployment.issue(("127.0.0.1",)))
    elif case == "other CA":
        stranger = create_ca(tmp_path / "stranger", common_name="Stranger CA")
        stranger.issue_server(["sip.example.test", "example.test"], ["127.0.0.1"]).write(
            deployment.cert, deployment.key
        )
    elif case == "revoked":
        issued = deployment.issue()
        deployment.ca.revoke(issued.serial, reason="keyCompromise")
        deployment.install(issued)
    elif case == "garbage":
        deployment.cert.write_text("not a certificate\n")
    elif case == "missing key":
        deployment.key.unlink()
    elif case == "encrypted key":
        deployment.issue().write(deployment.cert, deployment.key, passphrase=b"secret")
    outcome = tls.reload("signal")
    assert not outcome.reloaded
    assert reason in outcome.reason
    assert tls.info.sha256_fingerprint == kept
    [event] = log.named("certificate reload refused")
    assert event["level"] == "error" and reason in event["reason"]
    assert event["fingerprint"] == kept  # says what stays in use
    status = read_status(deployment.root / "tls-status.json")
    assert status is not None and status["outcome"] == "refused" and reason in status["reason"]

    async def still_old() -> None:
        async with echo_server(tls.context) as server:
            client = await connect(
                server.port, client_context(deployment.ca.cert_path), "sip.example.test"
            )
            assert client.fingerprint == kept.replace(":", "").lower()
            await client.close()

    run(still_old)


def test_expired_certificate_is_refused(deployment: Deployment) -> None:
    now = [dt.datetime.now(dt.UTC)]
    log = RecordingLogger()
    tls = ServerTls(deployment.files(), clock=lambda: now[0], logger=log)
    deployment.install(deployment.issue(lifetime=dt.timedelta(minutes=10)))
    now[0] += dt.timedelta(hours=1)  # judged an hour later, the new one has expired
    outcome = tls.reload("signal")
    assert not outcome.reloaded and "expired on" in outcome.reason


def test_key_type_change_takes_effect(deployment: Deployment) -> None:
    """EC to RSA: a fresh context per reload leaves no stale ECDSA certificate behind."""
    tls, _ = make(deployment)

    async def scenario() -> None:
        async with echo_server(tls.context) as server:
            rsa = deployment.install(deployment.issue(key_type="rsa"))
            assert tls.reload("signal").reloaded
            client = await connect(
                server.port, client_context(deployment.ca.cert_path), "sip.example.test"
            )
            assert client.fingerprint == der_fingerprint(rsa.certificate)
            await client.close()

    run(scenario)


def test_files_changed_waits_for_files_to_settle(deployment: Deployment) -> None:
    tls, _ = make(deployment)
    assert not tls.files_changed()
    deployment.install(deployment.issue())
    assert not tls.files_changed()  # first sight of the change: wait a round
    assert tls.files_changed()  # unchanged since: act
    assert tls.reload("file change").reloaded
    assert not tls.files_changed()
    deployment.key.write_bytes(deployment.issue().key_pem())  # a bad pair
    assert not tls.files_changed()
    assert tls.files_changed()
    assert not tls.reload("file change").reloaded
    assert not tls.files_changed()  # refused files are not retried until they change
    assert not tls.files_changed()


def test_status_file_counts_outcomes(deployment: Deployment) -> None:
    tls, _ = make(deployment, status=True)
    tls.reload("signal")
    status = json.loads((deployment.root / "tls-status.json").read_text())
    assert status["seq"] == 2 and status["trigger"] == "signal"
    assert status["fingerprint"] == tls.info.sha256_fingerprint


def test_optional_client_certificates_and_revocation(deployment: Deployment) -> None:
    tls, _ = make(deployment, client_auth=True)
    alice = deployment.ca.issue_client("alice", "example.test")
    alice.write(deployment.root / "alice.crt", deployment.root / "alice.key")
    with_cert = client_context(
        deployment.ca.cert_path,
        cert_path=deployment.root / "alice.crt",
        key_path=deployment.root / "alice.key",
    )
    without_cert = client_context(deployment.ca.cert_path)

    async def scenario() -> None:
        async with echo_server(tls.context) as server:
            assert await accepted(server.port, with_cert, "sip.example.test")
            assert server.peers[-1] is not None
            assert server.peers[-1]["subjectAltName"] == (("URI", "sip:alice@example.test"),)
            assert await accepted(server.port, without_cert, "sip.example.test")
            assert server.peers[-1] is None
            deployment.ca.revoke(alice.serial, reason="keyCompromise")
            assert tls.reload("signal").reloaded  # picks up the new CRL
            assert not await accepted(server.port, with_cert, "sip.example.test")
            assert await accepted(server.port, without_cert, "sip.example.test")

    run(scenario)


def test_client_auth_needs_a_crl(deployment: Deployment) -> None:
    deployment.ca.crl_path.unlink()
    with pytest.raises(PkiError, match="CRL not found"):
        make(deployment, client_auth=True)


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_thousand_reloads_do_not_grow_memory(deployment: Deployment) -> None:
    tls, log = make(deployment)
    client_ctx = client_context(deployment.ca.cert_path)

    async def scenario() -> tuple[int, int, int]:
        async with echo_server(tls.context) as server:

            async def reloads(count: int) -> None:
                for i in range(count):
                    assert tls.reload("signal").reloaded
                    log.events.clear()
                    if i % 100 == 0:  # handshakes on the reloaded contexts as we go
                        assert await accepted(server.port, client_ctx, "sip.example.test")

            await reloads(100)  # warm-up: caches, allocator arenas
            tracemalloc.start()
            rss_before = _rss()
            traced_before = tracemalloc.get_traced_memory()[0]
            await reloads(1000)
            traced_after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            return rss_before, _rss(), traced_after - traced_before

    rss_before, rss_after, traced = run(scenario)
    # A leaked context (OpenSSL SSL_CTX plus certificate) costs tens of KiB:
    # a thousand would be tens of MiB. Allow generous noise, not a leak.
    assert rss_after - rss_before < 16 * 1024 * 1024, (rss_before, rss_after)
    assert traced < 1024 * 1024, traced


def test_scratch_copy_is_removed(deployment: Deployment) -> None:
    tls, _ = make(deployment)
    tls.reload("signal")
    assert not [p for p in deployment.key.parent.iterdir() if p.name.startswith(".load-")]


def test_required_names_cover_ip(deployment: Deployment) -> None:
    assert "127.0.0.1" in REQUIRED
    deployment.install(deployment.issue(("sip.example.test", "example.test")))
    tls_files = deployment.files()
    with pytest.raises(PkiError, match=r"does not cover required name 127\.0\.0\.1"):
        ServerTls(tls_files, logger=RecordingLogger())


def test_sni_callback_moves_handshake_without_sni(deployment: Deployment) -> None:
    """Clients that connect by IP send no SNI; the switch must still happen."""
    tls, _ = make(deployment)
    replacement = deployment.install(deployment.issue())
    assert tls.reload("signal").reloaded

    async def scenario() -> None:
        async with echo_server(tls.context) as server:
            ctx = client_context(deployment.ca.cert_path)
            client = await connect(server.port, ctx, "127.0.0.1")  # IP: no SNI is sent
            assert client.fingerprint == der_fingerprint(replacement.certificate)
            await client.close()

    run(scenario)
    assert isinstance(tls.current_context, ssl.SSLContext)


def test_reload_closes_connections_of_revoked_peers(deployment: Deployment) -> None:
    tls, log = make(deployment, client_auth=True)
    alice = deployment.ca.issue_client("alice", "example.test")
    bob = deployment.ca.issue_client("bob", "example.test")
    stranger_ca = create_ca(deployment.root / "stranger", common_name="Stranger CA")
    stranger = stranger_ca.issue_client("alice", "example.test")
    ders = {
        name: issued.certificate.public_bytes(serialization.Encoding.DER)
        for name, issued in (("alice", alice), ("bob", bob), ("stranger", stranger))
    }
    judged: dict[str, bool] = {}

    def closer(condemned: Callable[[bytes], bool]) -> list[tuple[object, bytes]]:
        judged.update({name: condemned(der) for name, der in ders.items()})
        return [(f"tls-flow-{name}", ders[name]) for name, bad in judged.items() if bad]

    tls.peer_closer = closer
    tls.reload("signal")
    assert judged == {}  # nothing revoked yet: no connection is even looked at
    deployment.ca.revoke(alice.serial, reason="keyCompromise")
    tls.reload("signal")
    assert judged == {"alice": True, "bob": False, "stranger": False}
    (closed,) = log.named("connection closed: certificate revoked")
    assert closed["flow"] == "tls-flow-alice" and closed["serial"] == f"{alice.serial:X}"
    assert closed["level"] == "warning" and closed["trigger"] == "signal"


def test_a_failing_closer_does_not_break_the_reload(deployment: Deployment) -> None:
    tls, log = make(deployment, client_auth=True)
    alice = deployment.ca.issue_client("alice", "example.test")
    deployment.ca.revoke(alice.serial)

    def broken(_condemned: Callable[[bytes], bool]) -> list[tuple[object, bytes]]:
        raise RuntimeError("table changed")

    tls.peer_closer = broken
    assert tls.reload("file change").reloaded
    assert log.named("revoked peers not closed")[0]["reason"] == "table changed"
