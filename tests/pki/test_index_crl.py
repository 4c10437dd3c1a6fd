"""The CA's index of issued certificates and its CRL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509

from conclave.pki import PkiError, create_ca, load_ca
from conclave.pki.crl import (
    Revocation,
    build_crl,
    crl_number,
    crl_problem,
    load_crl,
    needs_refresh,
    revoked_serials,
    write_crl,
)
from conclave.pki.index import CertificateIndex, format_serial, parse_serial


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_serials() -> None:
    assert format_serial(0xABC) == "ABC"
    for text in ("abc", "ABC", "0xabc", "0a:bc", " 0ABC "):
        assert parse_serial(text) == 0xABC
    for bad in ("", "xyz", "12-34"):
        with pytest.raises(PkiError, match="not a certificate serial number"):
            parse_serial(bad)


def test_create_ca_publishes_empty_crl_and_index(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    crl = load_crl(ca.crl_path, ca.certificate)
    assert len(crl) == 0 and crl_number(crl) == 1
    assert crl_problem(crl, now()) is None and not needs_refresh(crl, now())
    data = json.loads((tmp_path / "index.json").read_text())
    assert data == {"version": 1, "crl_number": 1, "certificates": []}


def test_issuance_is_recorded(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    server = ca.issue_server(["sip.example.test"], ["192.0.2.1"])
    client = ca.issue_client("alice", "Example.Test")
    ca.record_files(server.serial, "tls/server.crt", "tls/server.key")
    entries = {e.serial: e for e in CertificateIndex(tmp_path / "index.json").entries()}
    s, c = entries[server.serial], entries[client.serial]
    assert s.kind == "server" and s.status == "valid" and s.cert_path == "tls/server.crt"
    assert s.sans == ("DNS:sip.example.test", "IP:192.0.2.1")
    assert s.dns_names == ("sip.example.test",) and s.ip_addresses == ("192.0.2.1",)
    assert s.not_after == server.certificate.not_valid_after_utc
    assert c.kind == "client" and c.user == "alice@example.test"
    assert c.sans == ("URI:sip:alice@example.test",) and c.subject == "CN=alice@example.test"
    # serials survive JSON exactly (they are 159-bit numbers)
    raw = json.loads((tmp_path / "index.json").read_text())
    assert {int(item["serial"], 16) for item in raw["certificates"]} == set(entries)


def test_revoke_publishes_crl(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    keep = ca.issue_server(["a.test"])
    gone = ca.issue_server(["b.test"])
    entry = ca.revoke(gone.serial, reason="keyCompromise", now=now())
    assert entry.status == "revoked" and entry.reason == "keyCompromise"
    crl = load_crl(ca.crl_path, ca.certificate)
    assert revoked_serials(crl) == {gone.serial} and keep.serial not in revoked_serials(crl)
    assert crl_number(crl) == 2
    revoked = crl.get_revoked_certificate_by_serial_number(gone.serial)
    assert revoked is not None
    assert revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    with pytest.raises(PkiError, match="already revoked"):
        ca.revoke(gone.serial)
    with pytest.raises(PkiError, match="no certificate with serial ABC"):
        ca.revoke(0xABC)
    with pytest.raises(PkiError, match="unknown revocation reason"):
        ca.revoke(keep.serial, reason="boredom")


def test_expired_revocations_leave_the_crl(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    short = ca.issue_server(["a.test"], lifetime=dt.timedelta(minutes=1))
    ca.revoke(short.serial)
    later = ca.publish_crl(now() + dt.timedelta(hours=1))
    assert short.serial not in revoked_serials(later)


def test_crl_problems(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    crl = build_crl(
        ca.certificate,
        ca.private_key,
        [Revocation(5, now())],
        number=9,
        now=now() - dt.timedelta(days=40),
    )
    problem = crl_problem(crl, now())
    assert problem is not None and problem.startswith("expired on ")
    assert needs_refresh(crl, now())
    assert revoked_serials(crl) == {5}
    future = build_crl(ca.certificate, ca.private_key, [], number=10, now=now() + dt.timedelta(1))
    assert "not valid until" in (crl_problem(future, now()) or "")


def test_load_crl_checks_issuer_and_signature(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "a", common_name="A")
    other = create_ca(tmp_path / "b", common_name="B")
    with pytest.raises(PkiError, match="not our CA"):
        load_crl(other.crl_path, ca.certificate)
    # An impostor CA with the same name as A: its CRL names A but A's key did not sign it.
    impostor = create_ca(tmp_path / "c", common_name="A")
    forged = build_crl(impostor.certificate, impostor.private_key, [], number=1, now=now())
    write_crl(tmp_path / "forged.pem", forged)
    with pytest.raises(PkiError, match="not signed by the CA key"):
        load_crl(tmp_path / "forged.pem", ca.certificate)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(PkiError, match="does not contain a PEM CRL"):
        load_crl(tmp_path / "junk.pem")
    with pytest.raises(PkiError, match="CRL not found"):
        load_crl(tmp_path / "missing.pem")


def test_index_transaction_writes_nothing_on_error(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    before = (tmp_path / "index.json").read_text()
    with pytest.raises(RuntimeError), ca.index.transaction() as state:
        state.crl_number = 99
        raise RuntimeError("abandon")
    assert (tmp_path / "index.json").read_text() == before


def test_damaged_index(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA")
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(PkiError, match="is damaged"):
        load_ca(tmp_path).index.entries()
    (tmp_path / "index.json").write_text('{"version": 7}')
    with pytest.raises(PkiError, match="unknown index version 7"):
        load_ca(tmp_path).index.entries()


def test_client_certificate_profile(tmp_path: Path) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca = create_ca(tmp_path, common_name="CA")
    cert = ca.issue_client("alice", "example.test").certificate
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["sip:alice@example.test"]
    assert not san.get_values_for_type(x509.DNSName)
    with pytest.raises(PkiError, match="invalid user name"):
        ca.issue_client("al ice", "example.test")


def test_lifetime_overrides_days(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    cert = ca.issue_server(["a.test"], lifetime=dt.timedelta(seconds=90)).certificate
    # notBefore is backdated five minutes for clock skew; notAfter is exactly the lifetime on
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert span == dt.timedelta(seconds=90) + dt.timedelta(minutes=5)
    with pytest.raises(PkiError, match="must be positive"):
        ca.issue_server(["a.test"], lifetime=dt.timedelta(0))


def test_adopt_records_certificates_issued_before_the_index(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    issued = ca.issue_server(["a.test"], ["192.0.2.1"])
    client = ca.issue_client("bob", "example.test")
    (tmp_path / "index.json").unlink()  # as in a data directory from before the index
    entry = ca.adopt(issued.certificate)
    assert entry.serial == issued.serial and entry.kind == "server" and entry.key_type == "ec"
    assert ca.adopt(issued.certificate) == entry  # idempotent
    assert ca.adopt(client.certificate).user == "bob@example.test"
    ca.revoke(issued.serial)
    stranger = create_ca(tmp_path / "s", common_name="Stranger")
    with pytest.raises(PkiError, match="was not issued by this CA"):
        ca.adopt(stranger.issue_server(["b.test"]).certificate)
