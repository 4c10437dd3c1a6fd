"""The built-in certificate authority.

A data directory holds one CA directory (``DATA/ca``) with:

* ``ca.crt``: the CA certificate clients and peer servers trust;
* ``ca.key``: its key, mode 0600, optionally encrypted with a passphrase;
  it never leaves the directory;
* ``index.json``: every certificate the CA issued (:mod:`conclave.pki.index`);
* ``crl.pem``: the revocation list, re-published on every revocation
  (:mod:`conclave.pki.crl`).

Typical use::

    ca = create_ca(data / "ca", common_name="example.test Conclave CA")
    leaf = ca.issue_server(["sip.example.test"], ["192.0.2.10"])
    leaf.write(data / "tls" / "server.crt", data / "tls" / "server.key")
    ca.revoke(leaf.certificate.serial_number, reason="keyCompromise")
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from conclave.pki.crl import CRL_FILE, Revocation, build_crl, write_crl
from conclave.pki.errors import PkiError
from conclave.pki.files import write_private_file, write_public_file
from conclave.pki.index import (
    INDEX_FILE,
    REVOCATION_REASONS,
    CertificateIndex,
    IndexEntry,
    Kind,
    format_serial,
)
from conclave.pki.info import describe
from conclave.pki.leaf import (
    BACKDATE,
    CLIENT_DEFAULT_DAYS,
    CLIENT_USAGES,
    RSA_KEY_BITS,
    SERVER_DEFAULT_DAYS,
    SERVER_USAGES,
    build_leaf,
    check_user,
    generate_key,
    key_pem,
    now_utc,
    server_names,
    validity,
)
from conclave.pki.load import (
    KeyType,
    PrivateKey,
    basic_constraints,
    load_certificate,
    load_certificates,
    load_private_key,
    public_der,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_DEFAULT_DAYS",
    "CA_KEY_FILE",
    "CLIENT_DEFAULT_DAYS",
    "RSA_KEY_BITS",
    "SERVER_DEFAULT_DAYS",
    "CertificateAuthority",
    "IssuedCertificate",
    "KeyType",
    "PrivateKey",
    "create_ca",
    "load_ca",
    "load_certificate",
    "load_certificates",
    "load_private_key",
]

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"

CA_DEFAULT_DAYS = 3650
"""A private CA lives long; its leaf certificates are short-lived instead."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued leaf certificate with its private key and CA chain."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    """The issuing CA certificate(s), nearest first; not including the leaf."""

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    def certificate_pem(self) -> bytes:
        """The leaf followed by the chain, PEM: what a TLS server presents."""
        certs = (self.certificate, *self.chain)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when a passphrase is given."""
        return key_pem(self.private_key, passphrase)

    def write(self, cert_path: Path, key_path: Path, *, passphrase: bytes | None = None) -> None:
        """Write the key (mode 0600, first) and the leaf-plus-chain certificate file.

        Existing files are replaced atomically. Pass the same paths to
        :func:`conclave.pki.tls.server_context` afterwards.
        """
        write_private_file(Path(key_path), self.key_pem(passphrase))
        write_public_file(Path(cert_path), self.certificate_pem())


@dataclass(frozen=True)
class CertificateAuthority:
    """An internal CA that signs server and client certificates and revokes them.

    Obtain one with :func:`create_ca` or :func:`load_ca`; do not construct it
    directly unless certificate and key are known to match. Every certificate
    issued is recorded in :attr:`index`.
    """

    certificate: x509.Certificate
    private_key: PrivateKey
    directory: Path

    @property
    def cert_path(self) -> Path:
        """Where the CA certificate lives: give this to clients as their trust anchor."""
        return self.directory / CA_CERT_FILE

    @property
    def crl_path(self) -> Path:
        """Where the CA publishes its CRL."""
        return self.directory / CRL_FILE

    @property
    def crl_urls(self) -> tuple[str, ...]:
        """Where the CRL is published; every certificate issued from now on names them."""
        return tuple(self.index.read().crl_urls)

    def set_crl_urls(self, urls: Sequence[str]) -> bool:
        """Record where the CRL is published (``http://`` URLs, RFC 5280 §4.2.1.13:
        a CRL is fetched over plain HTTP, since it is signed and checking it must
        not depend on TLS). Returns whether anything changed. Certificates issued
        before keep what they had; ``renew`` re-issues them with these."""
        return set_crl_urls(self.directory, urls)

    @property
    def index(self) -> CertificateIndex:
        """The record of every certificate this CA issued."""
        return CertificateIndex(self.directory / INDEX_FILE)

    def certificate_pem(self) -> bytes:
        """The CA certificate in PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self,
        names: Sequence[str],
        ips: Sequence[str] = (),
        *,
        days: int = SERVER_DEFAULT_DAYS,
        lifetime: dt.timedelta | None = None,
        key_type: KeyType = "ec",
    ) -> IssuedCertificate:
        """Issue a server certificate for DNS ``names`` and IP addresses ``ips``.

        The certificate carries both serverAuth and clientAuth so the same
        identity serves TLS and mutual TLS between servers. Its validity is
        ``days`` (or an exact ``lifetime``, for tests of expiry) clipped to the
        CA's. It is recorded in the index; call :meth:`IssuedCertificate.write`
        to store it, then :meth:`record_files` so ``renew`` can replace it.
        """
        common_name, sans = server_names(names, ips)
        now = now_utc()
        not_after = validity(now, days, lifetime, self.certificate)
        return self._issue("server", common_name, sans, SERVER_USAGES, now, not_after, key_type)

    def issue_client(
        self,
        user: str,
        domain: str,
        *,
        days: int = CLIENT_DEFAULT_DAYS,
        lifetime: dt.timedelta | None = None,
        key_type: KeyType = "ec",
    ) -> IssuedCertificate:
        """Issue a client certificate binding its holder to the account ``user@domain``.

        Subject CN ``user@domain``, SAN URI ``sip:user@domain``, EKU clientAuth
        only. A server with ``[tls] client_auth`` on reads the identity back
        with :func:`conclave.pki.identity.identity_from_peer_cert`.
        """
        user, domain = check_user(user, domain)
        aor = f"{user}@{domain}"
        now = now_utc()
        not_after = validity(now, days, lifetime, self.certificate)
        sans = [x509.UniformResourceIdentifier(f"sip:{aor}")]
        return self._issue("client", aor, sans, CLIENT_USAGES, now, not_after, key_type, aor)

    def _issue(
        self,
        kind: Kind,
        common_name: str,
        sans: Sequence[x509.GeneralName],
        usages: Sequence[x509.ObjectIdentifier],
        now: dt.datetime,
        not_after: dt.datetime,
        key_type: KeyType,
        user: str | None = None,
    ) -> IssuedCertificate:
        key = generate_key(key_type)
        cert = build_leaf(
            ca_cert=self.certificate,
            ca_key=self.private_key,
            key=key,
            common_name=common_name,
            sans=sans,
            usages=usages,
            now=now,
            not_after=not_after,
            crl_urls=self.crl_urls,
        )
        self.index.add(_entry(cert, kind, now, user))
        return IssuedCertificate(certificate=cert, private_key=key, chain=(self.certificate,))

    def adopt(self, cert: x509.Certificate) -> IndexEntry:
        """The index entry for ``cert``, recording it first if the index lacks it.

        For certificates this CA issued before it kept an index. Raises
        :class:`PkiError` for a certificate it did not issue.
        """
        entry = self.index.find(cert.serial_number)
        if entry is not None:
            return entry
        if not self.issued_by_me(cert):
            raise PkiError(f"certificate {cert.serial_number:X} was not issued by this CA")
        info = describe(cert)
        user = next((u[4:] for u in info.uris if u.lower().startswith("sip:")), None)
        kind: Kind = "client" if user and not info.dns_names and not info.ip_addresses else "server"
        entry = _entry(cert, kind, info.not_before, user if kind == "client" else None)
        self.index.add(entry)
        return entry

    def record_files(self, serial: int, cert_path: str, key_path: str) -> IndexEntry:
        """Remember where an issued certificate was written (paths as the caller names them)."""
        return self.index.set_paths(serial, cert_path, key_path)

    def revoke(
        self, serial: int, *, reason: str = "unspecified", now: dt.datetime | None = None
    ) -> IndexEntry:
        """Mark certificate ``serial`` revoked and publish a new CRL.

        Raises :class:`PkiError` for an unknown serial, one already revoked,
        or an unknown reason. Peers load the new CRL on their next reload.
        """
        if reason not in REVOCATION_REASONS:
            choices = ", ".join(REVOCATION_REASONS)
            raise PkiError(f"unknown revocation reason {reason!r}: use {choices}")
        now = now or now_utc()
        with self.index.transaction() as state:
            entry = state.find(serial)
            if entry is None:
                raise PkiError(
                    f"no certificate with serial {format_serial(serial)} in {self.index.path}"
                )
            if entry.status == "revoked":
                raise PkiError(f"certificate {entry.serial_hex} is already revoked")
            entry = replace(entry, status="revoked", revoked_at=now, reason=reason)
            state.put(entry)
        self.publish_crl(now)
        return entry

    def publish_crl(self, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """Sign and write ``crl.pem`` listing every revoked, unexpired certificate."""
        now = now or now_utc()
        with self.index.transaction() as state:
            state.crl_number += 1
            number = state.crl_number
            revoked = [
                Revocation(e.serial, e.revoked_at or now, e.reason or "unspecified")
                for e in state.entries
                if e.status == "revoked" and e.not_after > now
            ]
        crl = build_crl(self.certificate, self.private_key, revoked, number=number, now=now)
        write_crl(self.crl_path, crl)
        return crl

    def issued_by_me(self, cert: x509.Certificate) -> bool:
        """True when ``cert`` names this CA as issuer and carries a valid signature from it."""
        if cert.issuer != self.certificate.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


MAX_CRL_URL: Final = 1024
"""Characters in a CRL distribution point URL: every certificate carries it."""


def check_crl_url(url: str) -> str:
    """``url`` if it is an ``http://`` URL with a host and a path; PkiError otherwise."""
    parsed = urllib.parse.urlsplit(url)
    if (
        len(url) > MAX_CRL_URL
        or parsed.scheme != "http"
        or not parsed.hostname
        or not parsed.path.startswith("/")
        or parsed.query
        or parsed.fragment
        or parsed.username is not None
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        raise PkiError(f"not a CRL URL (http://HOST[:PORT]/PATH): {url[:80]!r}")
    return url


def set_crl_urls(directory: Path, urls: Sequence[str]) -> bool:
    """:meth:`CertificateAuthority.set_crl_urls` for the CA in ``directory``,
    without its key (which may be behind a passphrase): only the index changes."""
    checked = [check_crl_url(url) for url in urls]
    with CertificateIndex(directory / INDEX_FILE).transaction() as state:
        if state.crl_urls == checked:
            return False
        state.crl_urls = checked
    return True


def _entry(
    cert: x509.Certificate, kind: Kind, issued_at: dt.datetime, user: str | None
) -> IndexEntry:
    """The index record of a certificate this CA issued."""
    info = describe(cert)
    return IndexEntry(
        serial=cert.serial_number,
        kind=kind,
        subject=info.subject,
        sans=info.tagged_sans,
        key_type=info.key_type,
        not_before=info.not_before,
        not_after=info.not_after,
        fingerprint=info.sha256_fingerprint,
        issued_at=issued_at,
        user=user,
    )


def create_ca(
    directory: Path,
    *,
    common_name: str,
    key_type: KeyType = "ec",
    passphrase: bytes | None = None,
    days: int = CA_DEFAULT_DAYS,
) -> CertificateAuthority:
    """Create a new CA in ``directory`` (made if missing): ca.crt, ca.key, index, CRL.

    Refuses to overwrite an existing CA: replacing it would silently break
    trust for every client. The key is written mode 0600 and, with a
    ``passphrase``, encrypted; the same passphrase is then needed by
    :func:`load_ca`. An empty CRL is published at once, because peers that
    check revocation refuse everyone when the CA has no CRL at all.
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
    key = generate_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = now_utc()
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
    write_private_file(key_path, key_pem(key, passphrase))
    write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    ca = CertificateAuthority(certificate=cert, private_key=key, directory=directory)
    ca.publish_crl(now)
    return ca


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
    constraints = basic_constraints(cert)
    if constraints is None or not constraints.ca:
        raise PkiError(f"{cert_path} is not a CA certificate")
    if public_der(key) != public_der(cert):
        raise PkiError(f"CA key {key_path} does not match certificate {cert_path}")
    return CertificateAuthority(certificate=cert, private_key=key, directory=directory)
