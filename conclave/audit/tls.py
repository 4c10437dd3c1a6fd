"""TLS checks: certificates (expiry, key, signature, issuer) and the servers' TLS policy.

The policy is read from the context every Conclave server builds
(:func:`conclave.pki.tls.bare_server_context`), not from documentation, so a
change that weakens it is caught here.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from conclave.pki import PkiError, describe, load_certificates
from conclave.pki.ca import CA_DEFAULT_DAYS
from conclave.pki.tls import bare_server_context

from .findings import Finding

EXPIRY_WARNING = dt.timedelta(days=30)
MAX_SERVER_LIFETIME = dt.timedelta(days=398)
"""Longest validity for a server certificate: the public web's limit (CA/Browser Forum
baseline requirements, since September 2020). Conclave's CA issues SERVER_DEFAULT_DAYS (397)."""
MAX_CA_LIFETIME = dt.timedelta(days=CA_DEFAULT_DAYS + 1)
"""Longest validity for the CA: its documented default (a day of slack for the backdated start)."""
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = frozenset({"sha1", "md5"})
_VERSION_NAMES = {
    ssl.TLSVersion.SSLv3: "SSL 3.0",
    ssl.TLSVersion.TLSv1: "TLS 1.0",
    ssl.TLSVersion.TLSv1_1: "TLS 1.1",
    ssl.TLSVersion.TLSv1_2: "TLS 1.2",
    ssl.TLSVersion.TLSv1_3: "TLS 1.3",
}
_ORDER = list(_VERSION_NAMES)


def tls_versions(context: ssl.SSLContext | None = None) -> list[str]:
    """The TLS versions a Conclave server accepts, oldest first."""
    context = context or bare_server_context()
    low = context.minimum_version
    high = context.maximum_version
    if low == ssl.TLSVersion.MINIMUM_SUPPORTED:
        low = ssl.TLSVersion.TLSv1
    if high == ssl.TLSVersion.MAXIMUM_SUPPORTED:
        high = ssl.TLSVersion.TLSv1_3 if ssl.HAS_TLSv1_3 else ssl.TLSVersion.TLSv1_2
    return [_VERSION_NAMES[v] for v in _ORDER[_ORDER.index(low) : _ORDER.index(high) + 1]]


def policy_findings(where: str = "conclave.pki.tls policy") -> list[Finding]:
    """Weaknesses in the TLS policy the servers use: old versions, suites without AEAD or PFS."""
    context = bare_server_context()
    findings: list[Finding] = []
    old = [v for v in tls_versions(context) if v in ("SSL 3.0", "TLS 1.0", "TLS 1.1")]
    if old:
        findings.append(Finding("TLS-WEAK", f"accepts {', '.join(old)}", where))
    for cipher in context.get_ciphers():
        name = str(cipher.get("name", ""))
        if cipher.get("protocol") == "TLSv1.3":
            continue  # every TLS 1.3 suite is AEAD with (EC)DHE
        aead = bool(cipher.get("aead"))
        kx = str(cipher.get("kea", ""))
        if not aead or kx not in ("kx-ecdhe", "kx-dhe"):
            findings.append(
                Finding("TLS-WEAK", f"offers {name} (no AEAD or no forward secrecy)", where)
            )
    return findings


def _key_problem(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.key_size < MIN_EC_BITS:
        return f"an EC key of {key.key_size} bits (at least {MIN_EC_BITS})"
    if isinstance(key, dsa.DSAPublicKey):
        return "a DSA key"
    return None


def _signature_problem(cert: x509.Certificate) -> str | None:
    algorithm = cert.signature_hash_algorithm
    if algorithm is not None and algorithm.name in WEAK_HASHES:
        return f"a {algorithm.name.upper()} signature"
    return None


def certificate_findings(
    path: Path, where: str, now: dt.datetime, *, what: str = "certificate"
) -> tuple[list[Finding], x509.Certificate | None]:
    """Expiry, key and signature of the leaf in ``path``; also returns the leaf if readable."""
    try:
        chain = load_certificates(path)
        if not chain:
            raise PkiError(f"no certificate in {path}")
    except PkiError as exc:
        return [Finding("CERT-UNREADABLE", str(exc).splitlines()[0], where)], None
    leaf = chain[0]
    info = describe(leaf)
    findings: list[Finding] = []
    label = f"{what} {path} ({info.subject})"
    if info.not_after <= now:
        findings.append(
            Finding("CERT-EXPIRED", f"{label} expired {info.not_after:%Y-%m-%d %H:%M} UTC", where)
        )
    elif info.expires_within(now, EXPIRY_WARNING):
        findings.append(
            Finding(
                "CERT-EXPIRING",
                f"{label} expires in {info.days_left(now):.0f} days "
                f"({info.not_after:%Y-%m-%d} UTC)",
                where,
            )
        )
    lifetime = info.not_after - info.not_before
    longest, limit = (
        (MAX_CA_LIFETIME, f"the CA's default is {CA_DEFAULT_DAYS}")
        if info.is_ca
        else (MAX_SERVER_LIFETIME, f"at most {MAX_SERVER_LIFETIME.days} for a server")
    )
    if lifetime > longest:
        findings.append(
            Finding(
                "CERT-LIFETIME-LONG",
                f"{label} is valid for {lifetime.days} days ({limit})",
                where,
            )
        )
    for problem in (_key_problem(leaf), _signature_problem(leaf)):
        if problem:
            findings.append(Finding("TLS-WEAK", f"{label} has {problem}", where))
    return findings, leaf


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def issued_by(cert: x509.Certificate, ca: x509.Certificate | None) -> bool:
    if ca is None or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
