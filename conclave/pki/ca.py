"""The built-in certificate authority.

A data directory holds one CA (``ca.crt`` and ``ca.key``) that signs the
server certificates of every role. Clients and peer servers trust ``ca.crt``;
the key never leaves the directory and is written mode 0600, optionally
encrypted with a passphrase.

Typical use::

    ca = create_ca(data / "ca", common_name="example.test Conclave CA")
    leaf = ca.issue_server(["sip.example.test"], ["192.0.2.10"])
    leaf.write(data / "tls" / "server.crt", data / "tls" / "server.key")
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conclave.pki.errors import PkiError
from conclave.pki.files import write_private_file, write_public_file

KeyType: TypeAlias = Literal["ec", "rsa"]
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"

RSA_KEY_BITS = 3072
"""RSA modulus size: 3072 bits gives about 128-bit security (NIST SP 800-57),
matching P-256, and is the minimum that keeps a 10-year CA sensible."""

CA_DEFAULT_DAYS = 3650
"""A private CA lives long; its leaf certificates are short-lived instead."""

SERVER_DEFAULT_DAYS = 397
"""The CA/Browser Forum ceiling for TLS server certificates; clients that
apply public-web rules to private CAs (Apple's, for instance) refuse longer."""

BACKDATE = dt.timedelta(minutes=5)
"""notBefore is set slightly in the past so peers with a little clock skew
do not reject a certificate issued moments ago."""

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _generate_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise PkiError(f"unknown key type {key_type!r}: use 'ec' or 'rsa'")


def _key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _public_der(key: PrivateKey | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_dns_name(name: str) -> str:
    """Validate one dNSName SAN (a single leading ``*.`` wildcard is allowed)."""
    host = name[:-1] if name.endswith(".") else name
    labels = host.split(".")
    if labels and labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not host or len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise PkiError(f"invalid DNS name for a certificate: {name!r}")
    return host.lower()


def _check_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise PkiError(f"invalid IP address for a certificate: {value!r}") from None


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued leaf certificate with its private key and CA chain."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    """The issuing CA certificate(s), nearest first; not including the leaf."""

    def certificate_pem(self) -> bytes:
        """The leaf followed by the chain, PEM: what a TLS server presents."""
        certs = (self.certificate, *self.chain)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when a passphrase is given."""
        return _key_pem(self.private_key, passphrase)

    def write(self, cert_path: Path, key_path: Path, *, passphrase: bytes | None = None) -> None:
        """Write the key (mode 0600, first) and the leaf-plus-chain certificate file.

        Existing files are replaced atomically. Pass the same paths to
        :func:`conclave.pki.tls.server_context` afterwards.
        """
        write_private_file(Path(key_path), self.key_pem(passphrase))
        write_public_file(Path(cert_path), self.certificate_pem())


@dataclass(frozen=True)
class CertificateAuthority:
    """An internal CA that can sign server certificates.

    Obtain one with :func:`create_ca` or :func:`load_ca`; do not construct it
    directly unless certificate and key are known to match.
    """

    certificate: x509.Certificate
    private_key: PrivateKey
    directory: Path

    @property
    def cert_path(self) -> Path:
        """Where the CA certificate lives: give this to clients as their trust anchor."""
        return self.directory / CA_CERT_FILE

    def certificate_pem(self) -> bytes:
        """The CA certificate in PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self,
        names: Sequence[str],
        ips: Sequence[str] = (),
        *,
        days: int = SERVER_DEFAULT_DAYS,
        key_type: KeyType = "ec",
    ) -> IssuedCertificate:
        """Issue a server certificate for DNS ``names`` and IP addresses ``ips``.

        The certificate carries both serverAuth and clientAuth so the same
        identity serves TLS and mutual TLS between servers. Its validity is
        clipped to the CA's. Call :meth:`IssuedCertificate.write` to store it.
        """
        dns = [_check_dns_name(n) for n in names]
        addresses = [_check_ip(i) for i in ips]
        if not dns and not addresses:
            raise PkiError("a server certificate needs at least one DNS name or IP address")
        if days < 1:
            raise PkiError(f"certificate lifetime must be at least 1 day, not {days}")
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self.certificate.not_valid_after_utc)
        if not_after <= now:
            raise PkiError("the CA certificate has expired: create a new CA")
        key = _generate_key(key_type)
        common_name = dns[0] if dns else str(addresses[0])
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(a) for a in addresses]
        # RSA keys may encipher the TLS 1.2 premaster secret only in RSA key
        # exchange, which our cipher policy never uses; still, clients expect
        # keyEncipherment on RSA server certificates (RFC 5280 §4.2.1.3).
        is_rsa = isinstance(key, rsa.RSAPrivateKey)
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=is_rsa,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
        )
        cert = builder.sign(self.private_key, hashes.SHA256())
        return IssuedCertificate(certificate=cert, private_key=key, chain=(self.certificate,))


def create_ca(
    directory: Path,
    *,
    common_name: str,
    key_type: KeyType = "ec",
    passphrase: bytes | None = None,
    days: int = CA_DEFAULT_DAYS,
) -> CertificateAuthority:
    """Create a new CA in ``directory`` (made if missing) and write ca.crt and ca.key.

    Refuses to overwrite an existing CA: replacing it would silently break
    trust for every client. The key is written mode 0600 and, with a
    ``passphrase``, encrypted; the same passphrase is then needed by
    :func:`load_ca`.
    """
    directory = Path(directory)
    if not common_name.strip():
        raise PkiError("the CA needs a non-empty common name")
    if days < 1:
        raise PkiError(f"CA lifetime must be at least 1 day, not {days}")
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    for path in (cert_path, key_path):
        if path.exists():
            raise PkiError(f"a CA already exists: {path} (refusing to overwrite it)")
    key = _generate_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a certificate without its key is useless, the reverse is recoverable.
    write_private_file(key_path, _key_pem(key, passphrase))
    write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(certificate=cert, private_key=key, directory=directory)


def load_ca(directory: Path, passphrase: bytes | None = None) -> CertificateAuthority:
    """Load the CA in ``directory``, checking that its key matches its certificate.

    Raises :class:`PkiError` for a missing file, a key readable by other
    users, a missing or wrong passphrase, or a mismatched key.
    """
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    cert = load_certificate(cert_path)
    try:
        mode = key_path.stat().st_mode & 0o777
        key_bytes = key_path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"CA key not found: {key_path}") from None
    except OSError as exc:
        raise PkiError(f"cannot read CA key {key_path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise PkiError(
            f"CA key {key_path} is accessible by other users (mode {mode:04o}): chmod 600 it"
        )
    key = load_private_key(key_path, key_bytes, passphrase)
    constraints = _basic_constraints(cert)
    if constraints is None or not constraints.ca:
        raise PkiError(f"{cert_path} is not a CA certificate")
    if _public_der(key) != _public_der(cert):
        raise PkiError(f"CA key {key_path} does not match certificate {cert_path}")
    return CertificateAuthority(certificate=cert, private_key=key, directory=directory)


def load_certificate(path: Path) -> x509.Certificate:
    """Read the first PEM certificate in ``path``."""
    return load_certificates(path)[0]


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Read every PEM certificate in ``path`` (a leaf-plus-chain file gives several)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"certificate not found: {path}") from None
    except OSError as exc:
        raise PkiError(f"cannot read certificate {path}: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PkiError(f"{path} does not contain a PEM certificate") from None
    if not certs:
        raise PkiError(f"{path} does not contain a PEM certificate")
    return certs


def load_private_key(path: Path, data: bytes, passphrase: bytes | None) -> PrivateKey:
    """Parse a PEM private key read from ``path``, mapping failures to :class:`PkiError`."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError:
        # cryptography signals "encrypted but no password" and "password but
        # not encrypted" with TypeError; tell the two apart by what was given.
        if passphrase:
            raise PkiError(f"key {path} is not encrypted but a passphrase was given") from None
        raise PkiError(f"key {path} is encrypted: a passphrase is needed") from None
    except ValueError:
        if passphrase:
            raise PkiError(f"wrong passphrase for key {path}") from None
        raise PkiError(f"{path} does not contain a readable PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"key {path} is neither ECDSA nor RSA")
    return key


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
