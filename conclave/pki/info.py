"""Human-facing summaries of certificates (for ``conclave certs list``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass(frozen=True)
class CertInfo:
    """What an operator needs to know about one certificate."""

    subject: str
    """The subject distinguished name, RFC 4514 string (``CN=sip.example.test``)."""
    issuer: str
    """The issuer distinguished name, RFC 4514 string."""
    dns_names: tuple[str, ...]
    """dNSName subjectAltName entries."""
    ip_addresses: tuple[str, ...]
    """iPAddress subjectAltName entries, as text."""
    serial: int
    not_before: dt.datetime
    """Start of validity, timezone-aware UTC."""
    not_after: dt.datetime
    """End of validity, timezone-aware UTC."""
    sha256_fingerprint: str
    """SHA-256 of the DER encoding as colon-separated upper-case hex pairs."""
    is_ca: bool
    uris: tuple[str, ...] = ()
    """uniformResourceIdentifier subjectAltName entries (``sip:user@domain`` on client
    certificates)."""
    key_type: str = ""
    """``ec`` or ``rsa``."""

    @property
    def sans(self) -> tuple[str, ...]:
        """All subjectAltName entries, DNS names first."""
        return self.dns_names + self.ip_addresses + self.uris

    @property
    def tagged_sans(self) -> tuple[str, ...]:
        """subjectAltName entries with their type: ``DNS:x``, ``IP:x``, ``URI:x``."""
        return (
            tuple(f"DNS:{n}" for n in self.dns_names)
            + tuple(f"IP:{a}" for a in self.ip_addresses)
            + tuple(f"URI:{u}" for u in self.uris)
        )

    def expires_within(self, now: dt.datetime, delta: dt.timedelta) -> bool:
        """True when the certificate is expired or will be by ``now + delta``."""
        return self.not_after <= now + delta

    def days_left(self, now: dt.datetime) -> float:
        """Days until expiry (negative once expired)."""
        return (self.not_after - now).total_seconds() / 86400


def describe(cert: x509.Certificate) -> CertInfo:
    """Summarise ``cert`` (load it with :func:`conclave.pki.load_certificates`)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        dns, ips, uris = (), (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns,
        ip_addresses=ips,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256_fingerprint=fingerprint(cert),
        is_ca=is_ca,
        uris=uris,
        key_type=_key_type(cert),
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding as colon-separated upper-case hex pairs."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _key_type(cert: x509.Certificate) -> str:
    public = cert.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa"
    return type(public).__name__
