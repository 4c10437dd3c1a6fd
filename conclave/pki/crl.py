"""Certificate revocation lists (RFC 5280 §5) for the built-in CA.

The CA publishes ``crl.pem`` beside ``ca.crt``: a CRL signed by the CA key
that lists every revoked certificate not yet expired (an expired certificate
fails validation anyway, RFC 5280 §3.3). TLS contexts that verify peers load
it and check the leaf (``VERIFY_CRL_CHECK_LEAF``), so a revoked peer or
client certificate fails the handshake.

A CRL is itself short-lived: OpenSSL refuses every peer once ``nextUpdate``
has passed ("CRL has expired"), which fails closed. The CA re-signs the list
when less than :data:`CRL_REFRESH_BEFORE` remains; a running server does so
on its own when it can read the CA key, and warns when it cannot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID

from conclave.pki.errors import PkiError
from conclave.pki.files import write_public_file
from conclave.pki.load import PrivateKey, read_file

CRL_FILE = "crl.pem"

CRL_LIFETIME = dt.timedelta(days=30)
"""How long a published CRL stays valid: long enough to survive a CA key
kept offline behind a passphrase for a few weeks, short enough that a
revocation cannot be rolled back by replaying an old list for long."""

CRL_REFRESH_BEFORE = dt.timedelta(days=15)
"""Re-sign the CRL when less than this remains before its nextUpdate."""

CRL_BACKDATE = dt.timedelta(minutes=5)
"""thisUpdate is set slightly in the past: a peer whose clock is a little
behind would otherwise find the list "not yet valid" and refuse everyone."""

_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
}


@dataclass(frozen=True)
class Revocation:
    """One line of a CRL."""

    serial: int
    revoked_at: dt.datetime
    reason: str = "unspecified"


def build_crl(
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Iterable[Revocation],
    *,
    number: int,
    now: dt.datetime,
    lifetime: dt.timedelta = CRL_LIFETIME,
) -> x509.CertificateRevocationList:
    """Sign a CRL for ``issuer`` listing ``revoked`` with CRL number ``number``.

    ``number`` must grow with every list published (RFC 5280 §5.2.3).
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - CRL_BACKDATE)
        .next_update(now + lifetime)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    except x509.ExtensionNotFound:
        pass
    for item in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(item.serial)
            .revocation_date(item.revoked_at)
        )
        reason = _REASONS.get(item.reason, x509.ReasonFlags.unspecified)
        if reason is not x509.ReasonFlags.unspecified:
            # RFC 5280 §5.3.1: omit the extension rather than say "unspecified".
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, hashes.SHA256())


def write_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    """Publish ``crl`` as PEM at ``path`` (atomically replacing the old list)."""
    write_public_file(Path(path), crl.public_bytes(serialization.Encoding.PEM))


def load_crl(path: Path, issuer: x509.Certificate | None = None) -> x509.CertificateRevocationList:
    """Read the PEM CRL at ``path``; with ``issuer``, check it is that CA's and signed by it."""
    path = Path(path)
    data = read_file(path, "CRL")
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise PkiError(f"{path} does not contain a PEM CRL") from None
    if issuer is not None:
        if crl.issuer != issuer.subject:
            raise PkiError(f"CRL {path} was issued by {crl.issuer.rfc4514_string()}, not our CA")
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise PkiError(f"CRL {path} is not signed by the CA key")
    return crl


def revoked_serials(crl: x509.CertificateRevocationList) -> frozenset[int]:
    """Serial numbers listed in ``crl``."""
    return frozenset(entry.serial_number for entry in crl)


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    """The CRLNumber extension's value, or None when the list has none."""
    try:
        ext = crl.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    return value.crl_number if isinstance(value, x509.CRLNumber) else None


def crl_problem(crl: x509.CertificateRevocationList, now: dt.datetime) -> str | None:
    """Why peers would refuse everyone because of ``crl`` (expired, not yet valid), or None."""
    next_update = crl.next_update_utc
    if next_update is not None and next_update <= now:
        return f"expired on {next_update:%Y-%m-%d %H:%M} UTC: every peer would be refused"
    if crl.last_update_utc > now:
        return f"not valid until {crl.last_update_utc:%Y-%m-%d %H:%M} UTC"
    return None


def needs_refresh(crl: x509.CertificateRevocationList, now: dt.datetime) -> bool:
    """True when the list should be re-signed (close to, or past, its nextUpdate)."""
    next_update = crl.next_update_utc
    return next_update is None or next_update - now < CRL_REFRESH_BEFORE
