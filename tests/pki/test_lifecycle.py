"""Renewal, expiry warnings, CRL upkeep and start-up repair, driven by a stepped clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conclave.pki import PkiError, create_ca, describe, load_certificate
from conclave.pki.crl import build_crl, load_crl, write_crl
from conclave.pki.leaf import SERVER_USAGES, build_leaf, generate_key, key_pem
from conclave.pki.lifecycle import (
    CertificateWatcher,
    RenewalPolicy,
    open_server_tls,
    renew_files,
)
from conclave.pki.reload import ServerTls
from tests.pki.conftest import REQUIRED, Deployment, RecordingLogger

HOUR = dt.timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def watcher(
    deployment: Deployment, clock: Clock, **policy: object
) -> tuple[CertificateWatcher, RecordingLogger]:
    log = RecordingLogger()
    tls = ServerTls(deployment.files(), clock=clock, logger=log)
    options: dict[str, object] = {"poll": 0.1, "warn_before": HOUR, "renew_before": HOUR}
    options.update(policy)
    return (
        CertificateWatcher(
            tls,
            RenewalPolicy(**options),  # type: ignore[arg-type]
            ca_dir=deployment.ca.directory,
            data_dir=deployment.root,
            logger=log,
        ),
        log,
    )


def tick(w: CertificateWatcher) -> None:
    asyncio.run(asyncio.wait_for(w.tick(), 60))


def test_short_lived_certificate_warns_then_renews(deployment: Deployment) -> None:
    old = deployment.install(deployment.issue(lifetime=dt.timedelta(minutes=10)))
    w, log = watcher(deployment, Clock())
    tick(w)
    [warning] = log.named("certificate expiring")
    assert warning["level"] == "warning" and warning["auto_renew"] is True
    assert warning["fingerprint"] == describe(old.certificate).sha256_fingerprint
    assert 0 < warning["days_left"] < 0.01
    [renewed] = log.named("certificate renewed")
    assert renewed["why"] == "expiring"
    assert renewed["old_fingerprint"] == warning["fingerprint"]
    reloads = log.named("certificate reloaded")
    assert [e["trigger"] for e in reloads] == ["startup", "renewal"]
    assert reloads[-1]["fingerprint"] == renewed["fingerprint"]
    new = load_certificate(deployment.cert)
    assert w.tls.certificate == new
    assert new.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=396)
    assert describe(new).sans == describe(old.certificate).sans
    entries = {e.serial: e for e in deployment.ca.index.entries()}
    assert entries[old.serial].status == "superseded"
    assert entries[old.serial].superseded_by == new.serial_number
    assert entries[new.serial_number].cert_path == "tls/server.crt"
    tick(w)  # nothing more to do
    assert len(log.named("certificate renewed")) == 1


def test_warning_is_repeated_daily_not_every_poll(deployment: Deployment) -> None:
    deployment.install(deployment.issue(lifetime=dt.timedelta(days=3)))
    clock = Clock()
    w, log = watcher(deployment, clock, warn_before=dt.timedelta(days=7), auto_renew=False)
    tick(w)
    tick(w)
    [warning] = log.named("certificate expiring")
    assert warning["auto_renew"] is False and "auto_renew" in warning["reason"]
    clock.now += dt.timedelta(days=1, seconds=1)
    tick(w)
    assert len(log.named("certificate expiring")) == 2
    assert not log.named("certificate renewed")


def test_passphrase_protected_ca_cannot_renew_unattended(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", common_name="Locked CA", passphrase=b"s3cret")
    deployment = Deployment(tmp_path, ca)
    deployment.install(deployment.issue(lifetime=dt.timedelta(minutes=5)))
    w, log = watcher(deployment, Clock())
    tick(w)
    [warning] = log.named("certificate expiring")
    assert warning["auto_renew"] is False
    assert "passphrase-protected" in warning["reason"]
    assert not log.named("certificate renewed")


def test_revoked_certificate_in_use_is_replaced(deployment: Deployment) -> None:
    w, log = watcher(deployment, Clock())
    serial = w.tls.info.serial
    deployment.ca.revoke(serial, reason="keyCompromise")
    tick(w)  # the CRL changed: noticed, not yet settled
    tick(w)
    [revoked] = log.named("certificate revoked")
    assert revoked["serial"] == f"{serial:X}" and revoked["auto_renew"] is True
    [renewed] = log.named("certificate renewed")
    assert renewed["why"] == "revoked"
    assert w.tls.info.serial != serial


def test_changed_files_are_reloaded_by_polling(deployment: Deployment) -> None:
    w, log = watcher(deployment, Clock(), warn_before=dt.timedelta(0), renew_before=dt.timedelta(0))
    replacement = deployment.install(deployment.issue())
    tick(w)
    assert w.tls.info.serial != replacement.serial  # waits for the files to settle
    tick(w)
    assert w.tls.info.serial == replacement.serial
    assert log.named("certificate reloaded")[-1]["trigger"] == "file change"


def test_crl_is_re_signed_before_it_expires(deployment: Deployment) -> None:
    ca = deployment.ca
    now = dt.datetime.now(dt.UTC)
    soon = build_crl(
        ca.certificate, ca.private_key, [], number=50, now=now, lifetime=dt.timedelta(days=2)
    )
    write_crl(ca.crl_path, soon)
    w, log = watcher(deployment, Clock())
    tick(w)
    [published] = log.named("crl published")
    assert published["revoked"] == 0
    crl = load_crl(ca.crl_path, ca.certificate)
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - now > dt.timedelta(days=29)
    assert log.named("certificate reloaded")[-1]["trigger"] == "crl refresh"


def test_crl_expiry_warning_when_ca_is_locked(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", common_name="Locked CA", passphrase=b"s3cret")
    deployment = Deployment(tmp_path, ca)
    deployment.install(deployment.issue())
    now = dt.datetime.now(dt.UTC)
    soon = build_crl(
        ca.certificate, ca.private_key, [], number=5, now=now, lifetime=dt.timedelta(days=2)
    )
    write_crl(ca.crl_path, soon)
    w, log = watcher(deployment, Clock())
    tick(w)
    tick(w)
    [warning] = log.named("crl expiring")
    assert "cannot re-sign it" in warning["reason"] and "passphrase" in warning["reason"]


def test_renew_files_keeps_names_kind_and_key_type(deployment: Deployment) -> None:
    rsa = deployment.install(deployment.issue(key_type="rsa"))
    old, new = renew_files(deployment.ca, deployment.cert, deployment.key, data_dir=deployment.root)
    assert old == rsa.certificate
    assert describe(new.certificate).key_type == "rsa"
    assert describe(new.certificate).sans == describe(old).sans
    assert new.private_key.public_key() != rsa.private_key.public_key()
    alice = deployment.ca.issue_client("alice", "example.test")
    cert, key = deployment.root / "alice.crt", deployment.root / "alice.key"
    alice.write(cert, key)
    _, renewed = renew_files(deployment.ca, cert, key, data_dir=deployment.root)
    assert describe(renewed.certificate).uris == ("sip:alice@example.test",)


def test_renew_files_adds_missing_required_names(deployment: Deployment) -> None:
    deployment.install(deployment.issue(("sip.example.test",)))
    _, new = renew_files(deployment.ca, deployment.cert, deployment.key, required=REQUIRED)
    info = describe(new.certificate)
    assert info.dns_names == ("sip.example.test", "example.test")
    assert info.ip_addresses == ("127.0.0.1",)


def test_renew_refuses_foreign_certificates(deployment: Deployment, tmp_path: Path) -> None:
    stranger = create_ca(tmp_path / "x", common_name="Public CA")
    stranger.issue_server(["edge.example.test"]).write(deployment.cert, deployment.key)
    with pytest.raises(PkiError, match="was not issued by our CA"):
        renew_files(deployment.ca, deployment.cert, deployment.key)


def test_start_up_renews_an_expired_internal_certificate(deployment: Deployment) -> None:
    ca = deployment.ca
    key = generate_key("ec")
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = build_leaf(
        ca_cert=ca.certificate,
        ca_key=ca.private_key,
        key=key,
        common_name="sip.example.test",
        sans=[x509.DNSName(n) for n in REQUIRED[:2]] + [x509.IPAddress(ip_address(REQUIRED[2]))],
        usages=SERVER_USAGES,
        now=then,
        not_after=then + dt.timedelta(days=7),
    )
    deployment.cert.write_bytes(expired.public_bytes(Encoding.PEM))
    deployment.key.write_bytes(key_pem(key, None))
    log = RecordingLogger()
    tls = open_server_tls(deployment.files(), RenewalPolicy(), ca_dir=ca.directory, logger=log)
    assert tls.info.not_after > dt.datetime.now(dt.UTC)
    [renewed] = log.named("certificate renewed")
    assert renewed["why"].startswith("expired on ")


def test_start_up_renews_a_revoked_internal_certificate(deployment: Deployment) -> None:
    log = RecordingLogger()
    issued = deployment.install(deployment.issue())
    deployment.ca.revoke(issued.serial)
    tls = open_server_tls(
        deployment.files(), RenewalPolicy(), ca_dir=deployment.ca.directory, logger=log
    )
    assert tls.info.serial != issued.serial
    [renewed] = log.named("certificate renewed")
    assert "is revoked" in renewed["why"]


def test_start_up_renews_a_certificate_missing_names(deployment: Deployment) -> None:
    deployment.install(deployment.issue(("sip.example.test",)))
    policy = RenewalPolicy()
    tls = open_server_tls(
        deployment.files(), policy, ca_dir=deployment.ca.directory, logger=RecordingLogger()
    )
    assert tls.info.dns_names == ("sip.example.test", "example.test")


def test_start_up_refuses_what_renewal_cannot_fix(deployment: Deployment, tmp_path: Path) -> None:
    deployment.key.write_bytes(deployment.issue().key_pem())
    with pytest.raises(PkiError, match="does not match certificate"):
        open_server_tls(deployment.files(), RenewalPolicy(), ca_dir=deployment.ca.directory)
    deployment.install(deployment.issue(("other.test",)))
    with pytest.raises(PkiError, match="does not cover required names"):
        open_server_tls(
            deployment.files(), RenewalPolicy(auto_renew=False), ca_dir=deployment.ca.directory
        )
