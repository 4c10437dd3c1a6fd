"""Who the Edge federates with: the allow-list, the block-list, partners and their limits.

Lync let any domain federate once partner discovery was on; Conclave
federates only with domains the topology allows (docs/edge.md):

* a domain is **allowed** when it, or a domain it is under, is on the
  allow-list or is a listed partner, or when federation is ``open``;
* the **block-list** beats everything, by the same suffix rule;
* each partner's requests are limited to its ``rate`` per second (a token
  bucket with one second of burst); past it the Edge answers 503 with
  Retry-After, and logs it at most once per :data:`THROTTLE_LOG_INTERVAL`.

A partner is recognised on an inbound connection by its certificate (see
:func:`partner_for_certificate`): issued by one of the CAs the topology names
for that partner, and naming the partner's domain or a host under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509

THROTTLE_LOG_INTERVAL = 10.0
"""Seconds between log lines about one partner's throttled requests."""
DISCOVERED_RATE = 20
"""Requests per second from one discovered partner (Lync's figure)."""
MAX_DISCOVERED_CONTACTS = 1000
"""Distinct local users one discovered partner may reach or be reached by (Lync's figure):
a discovered domain cannot sweep the directory."""
MAX_DISCOVERED_DOMAINS = 10_000
"""Discovered domains tracked at once; past it the oldest is forgotten (its counts restart)."""


@dataclass(frozen=True)
class PartnerPolicy:
    domain: str
    edge: str = ""
    port: int = 5061
    presence: bool = False
    rate: int = 20
    cas: tuple[x509.Certificate, ...] = ()
    """The CAs that sign the partner's certificates; empty: a public CA (the system's)."""


@dataclass
class _Bucket:
    tokens: float
    at: float
    logged_at: float = float("-inf")
    refused: int = 0


def covers(suffix: str, domain: str) -> bool:
    """True when ``domain`` is ``suffix`` or a name under it."""
    suffix, domain = suffix.lower().rstrip("."), domain.lower().rstrip(".")
    return domain == suffix or domain.endswith("." + suffix)


@dataclass
class FederationPolicy:
    enabled: bool
    partners: Mapping[str, PartnerPolicy] = field(default_factory=dict)
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    open: bool = False
    discovery: bool = False
    """Partner discovery: any domain not blocked, throttled as a discovered partner."""
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _contacts: dict[str, set[str]] = field(default_factory=dict)

    def blocked(self, domain: str) -> bool:
        return any(covers(entry, domain) for entry in self.block)

    def allowed(self, domain: str) -> bool:
        """May we federate with ``domain`` at all?"""
        if not self.enabled or self.blocked(domain):
            return False
        if self.open or self.discovery:
            return True
        return self.listed(domain)

    def listed(self, domain: str) -> bool:
        """On the allow-list or a partner of the topology (not merely discovered)."""
        return any(covers(entry, domain) for entry in (*self.allow, *self.partners))

    def discovered(self, domain: str) -> bool:
        """Allowed only because discovery is on: the discovered partners' throttles apply."""
        return self.discovery and not self.open and not self.listed(domain)

    def note_contact(self, domain: str, local: str) -> bool:
        """A discovered partner talks with local user ``local``: False once that would make
        more than :data:`MAX_DISCOVERED_CONTACTS` distinct ones."""
        if not self.discovered(domain):
            return True
        seen = self._contacts.pop(domain, None)
        if seen is None:
            seen = set()
            while len(self._contacts) >= MAX_DISCOVERED_DOMAINS:
                self._contacts.pop(next(iter(self._contacts)))
        self._contacts[domain] = seen  # most recent last
        if local in seen:
            return True
        if len(seen) >= MAX_DISCOVERED_CONTACTS:
            return False
        seen.add(local)
        return True

    def partner(self, domain: str) -> PartnerPolicy:
        """The settings for ``domain``: its own, else the defaults (an allow-listed domain)."""
        domain = domain.lower()
        for name, policy in self.partners.items():
            if covers(name, domain):
                return policy
        return PartnerPolicy(domain, rate=DISCOVERED_RATE)

    def admit(self, domain: str, now: float) -> bool:
        """Count one request from ``domain``; False when it is over its rate."""
        rate = float(self.partner(domain).rate)
        bucket = self._buckets.get(domain)
        if bucket is None:
            while len(self._buckets) >= MAX_DISCOVERED_DOMAINS + len(self.partners):
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[domain] = _Bucket(rate, now)
        bucket.tokens = min(rate, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        bucket.refused += 1
        return False

    def throttle_report(self, domain: str, now: float) -> int | None:
        """How many requests were refused since the last report, when it is time to log."""
        bucket = self._buckets.get(domain)
        if bucket is None or now - bucket.logged_at < THROTTLE_LOG_INTERVAL:
            return None
        bucket.logged_at = now
        refused, bucket.refused = bucket.refused, 0
        return refused


def certificate_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


def certificate_dns_names(der: bytes) -> list[str]:
    """The DNS names of a certificate in DER (none when it cannot be parsed)."""
    try:
        return certificate_names(x509.load_der_x509_certificate(der))
    except ValueError:
        return []


def issued_by(cert: x509.Certificate, cas: Iterable[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # wrong issuer, wrong signature, another key type: not this CA
            continue
        return True
    return False


def partner_for_certificate(der: bytes, policy: FederationPolicy) -> str | None:
    """The partner a verified peer certificate belongs to, or None.

    The TLS handshake checked the chain against every partner's CAs together;
    here the leaf must be issued by *this* partner's CA (so one partner's CA
    cannot speak for another) and name its domain or a host under it. A
    partner without CAs of its own relies on the handshake's public roots.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    names = certificate_names(cert)
    for domain, partner in policy.partners.items():
        if not any(covers(domain, name) for name in names):
            continue
        if partner.cas and not issued_by(cert, partner.cas):
            continue
        if policy.allowed(domain):
            return domain
    for domain in policy.allow:  # allow-listed without a partner entry: public CAs only
        if any(covers(domain, name) for name in names) and policy.allowed(domain):
            return domain
    return None
