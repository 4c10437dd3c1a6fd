"""Human-facing summaries of certificates (for ``conclave certs list``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes


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

    @property
    def sans(self) -> tuple[str, ...]:
        """All subjectAltName entries, DNS names first."""
        return self.dns_names + self.ip_addresses

    def expires_within(self, now: dt.datetime, delta: dt.timedelta) -> bool:
        """True when the certificate is expired or will be by ``now + delta``."""
        return self.not_after <= now + delta


def describe(cert: x509.Certificate) -> CertInfo:
    """Summarise ``cert`` (load it with :func:`conclave.pki.load_certificates`)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    digest = cert.fingerprint(hashes.SHA256())
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns,
        ip_addresses=ips,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256_fingerprint=":".join(f"{b:02X}" for b in digest),
        is_ca=is_ca,
    )
