"""The built-in CA: creation, loading, issuance and file safety."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from conclave.pki import PkiError, create_ca, describe, load_ca, load_certificates
from conclave.pki.files import write_private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_ca_writes_files_with_safe_modes(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", common_name="Example CA")
    assert mode(tmp_path / "ca" / "ca.key") == 0o600
    assert mode(tmp_path / "ca" / "ca.crt") == 0o644
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)
    assert ca.private_key.curve.name == "secp256r1"
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    info = describe(ca.certificate)
    assert info.is_ca and info.subject == "CN=Example CA" and info.issuer == "CN=Example CA"


def test_key_file_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        create_ca(tmp_path, common_name="CA")
    finally:
        os.umask(old)
    assert mode(tmp_path / "ca.key") == 0o600


def test_private_file_replaces_loose_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "k.pem"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_private_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]


def test_create_ca_refuses_to_overwrite(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA")
    with pytest.raises(PkiError, match="a CA already exists"):
        create_ca(tmp_path, common_name="CA")


def test_rsa_ca_and_leaf(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="RSA CA", key_type="rsa")
    assert isinstance(ca.private_key, rsa.RSAPrivateKey)
    assert ca.private_key.key_size == 3072
    leaf = ca.issue_server(["sip.example.test"], key_type="rsa")
    usage = leaf.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment


def test_load_ca_round_trip(tmp_path: Path) -> None:
    created = create_ca(tmp_path, common_name="CA")
    loaded = load_ca(tmp_path)
    assert loaded.certificate == created.certificate
    assert loaded.directory == tmp_path


def test_load_ca_with_passphrase(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA", passphrase=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / "ca.key").read_bytes()
    load_ca(tmp_path, passphrase=b"correct horse")


def test_load_ca_wrong_passphrase(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA", passphrase=b"correct horse")
    with pytest.raises(PkiError) as info:
        load_ca(tmp_path, passphrase=b"battery staple")
    assert str(info.value) == f"wrong passphrase for key {tmp_path / 'ca.key'}"


def test_load_ca_missing_passphrase(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA", passphrase=b"correct horse")
    with pytest.raises(PkiError, match="is encrypted: a passphrase is needed"):
        load_ca(tmp_path)


def test_load_ca_unexpected_passphrase(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA")
    with pytest.raises(PkiError, match="is not encrypted but a passphrase was given"):
        load_ca(tmp_path, passphrase=b"x")


def test_load_ca_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as info:
        load_ca(tmp_path)
    assert str(info.value) == f"certificate not found: {tmp_path / 'ca.crt'}"
    create_ca(tmp_path, common_name="CA")
    (tmp_path / "ca.key").unlink()
    with pytest.raises(PkiError, match="CA key not found"):
        load_ca(tmp_path)


def test_load_ca_key_mismatch(tmp_path: Path) -> None:
    create_ca(tmp_path / "a", common_name="A")
    create_ca(tmp_path / "b", common_name="B")
    os.replace(tmp_path / "b" / "ca.key", tmp_path / "a" / "ca.key")
    with pytest.raises(PkiError, match="does not match certificate"):
        load_ca(tmp_path / "a")


def test_load_ca_refuses_readable_key(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA")
    (tmp_path / "ca.key").chmod(0o644)
    with pytest.raises(PkiError, match=r"mode 0644\): chmod 600"):
        load_ca(tmp_path)


def test_load_ca_garbage_certificate(tmp_path: Path) -> None:
    create_ca(tmp_path, common_name="CA")
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(PkiError, match="does not contain a PEM certificate"):
        load_ca(tmp_path)


def test_issue_server_extensions(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    leaf = ca.issue_server(["SIP.Example.test", "*.example.test"], ["127.0.0.1", "::1"])
    cert = leaf.certificate
    ext = cert.extensions
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.private_key.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ca_ski.value.digest
    cert.verify_directly_issued_by(ca.certificate)
    info = describe(cert)
    assert info.dns_names == ("sip.example.test", "*.example.test")
    assert info.ip_addresses == ("127.0.0.1", "::1")
    assert info.sans == ("sip.example.test", "*.example.test", "127.0.0.1", "::1")
    assert info.subject == "CN=sip.example.test"
    assert info.issuer == "CN=CA"
    assert not info.is_ca
    assert len(info.sha256_fingerprint) == 32 * 3 - 1
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=396) < info.not_after - now <= dt.timedelta(days=397)
    assert not info.expires_within(now, dt.timedelta(days=30))
    assert info.expires_within(now, dt.timedelta(days=400))


def test_serials_are_random_and_distinct(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    serials = {ca.issue_server(["a.test"]).certificate.serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(s.bit_length() > 64 for s in serials)


def test_leaf_validity_clipped_to_ca(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA", days=30)
    leaf = ca.issue_server(["a.test"], days=397)
    assert leaf.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


@pytest.mark.parametrize(
    ("names", "ips", "message"),
    [
        ([], [], "at least one DNS name or IP address"),
        (["bad name.test"], [], "invalid DNS name"),
        (["-bad.test"], [], "invalid DNS name"),
        (["a.*.test"], [], "invalid DNS name"),
        ([], ["300.1.1.1"], "invalid IP address"),
    ],
)
def test_issue_server_rejects_bad_names(
    tmp_path: Path, names: list[str], ips: list[str], message: str
) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    with pytest.raises(PkiError, match=message):
        ca.issue_server(names, ips)


def test_write_leaf_then_chain(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", common_name="CA")
    leaf = ca.issue_server(["sip.example.test"])
    leaf.write(tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key")
    assert mode(tmp_path / "tls" / "server.key") == 0o600
    certs = load_certificates(tmp_path / "tls" / "server.crt")
    assert certs == [leaf.certificate, ca.certificate]


def test_encrypted_leaf_key(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, common_name="CA")
    leaf = ca.issue_server(["sip.example.test"])
    leaf.write(tmp_path / "s.crt", tmp_path / "s.key", passphrase=b"pw")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "s.key").read_bytes()
