"""Building leaf certificates: server identities and user client certificates.

Kept apart from :mod:`conclave.pki.ca` (which owns the CA's files, index and
CRL) so that the X.509 profile of each kind of certificate reads in one place:

* **server**: subject CN = first name; SAN dNSName/iPAddress; EKU serverAuth
  and clientAuth (the same identity serves TLS and mutual TLS between servers).
* **client**: subject CN = ``user@domain``; SAN URI ``sip:user@domain``
  (RFC 5922 §7.1 names SIP identities by URI SANs); EKU clientAuth only, so a
  user's certificate can never act as a server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conclave.pki.errors import PkiError
from conclave.pki.load import KeyType, PrivateKey

RSA_KEY_BITS = 3072
"""RSA modulus size: 3072 bits gives about 128-bit security (NIST SP 800-57),
matching P-256, and is the minimum that keeps a 10-year CA sensible."""

SERVER_DEFAULT_DAYS = 397
"""The CA/Browser Forum ceiling for TLS server certificates; clients that
apply public-web rules to private CAs (Apple's, for instance) refuse longer."""

CLIENT_DEFAULT_DAYS = 365
"""User certificates live a year: re-issued with the user's device refresh."""

BACKDATE = dt.timedelta(minutes=5)
"""notBefore is set slightly in the past so peers with a little clock skew
do not reject a certificate issued moments ago."""

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_USER = re.compile(r"[A-Za-z0-9._+-]{1,64}\Z")


def generate_key(key_type: KeyType) -> PrivateKey:
    """A fresh ECDSA P-256 or RSA-3072 private key."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise PkiError(f"unknown key type {key_type!r}: use 'ec' or 'rsa'")


def key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_dns_name(name: str) -> str:
    """Validate one dNSName SAN (a single leading ``*.`` wildcard is allowed)."""
    host = name[:-1] if name.endswith(".") else name
    labels = host.split(".")
    if labels and labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not host or len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise PkiError(f"invalid DNS name for a certificate: {name!r}")
    return host.lower()


def check_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise PkiError(f"invalid IP address for a certificate: {value!r}") from None


def check_user(user: str, domain: str) -> tuple[str, str]:
    """Validate the account a client certificate is bound to (the store's name rules)."""
    if not _USER.match(user):
        raise PkiError(f"invalid user name {user!r}: use letters, digits and . _ + - (at most 64)")
    return user, check_dns_name(domain)


def validity(
    now: dt.datetime, days: int, lifetime: dt.timedelta | None, ca: x509.Certificate
) -> dt.datetime:
    """notAfter for a new leaf: ``lifetime`` if given, else ``days``; clipped to the CA's."""
    if lifetime is None:
        if days < 1:
            raise PkiError(f"certificate lifetime must be at least 1 day, not {days}")
        lifetime = dt.timedelta(days=days)
    elif lifetime <= dt.timedelta(0):
        raise PkiError("certificate lifetime must be positive")
    not_after = min(now + lifetime, ca.not_valid_after_utc)
    if not_after <= now:
        raise PkiError("the CA certificate has expired: create a new CA")
    return not_after


def build_leaf(
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    key: PrivateKey,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    usages: Sequence[x509.ObjectIdentifier],
    now: dt.datetime,
    not_after: dt.datetime,
    crl_urls: Sequence[str] = (),
) -> x509.Certificate:
    """Sign an end-entity certificate for ``key`` with the CA; ``crl_urls``
    become its CRL distribution point (RFC 5280 §4.2.1.13)."""
    # RSA keys may encipher the TLS 1.2 premaster secret only in RSA key
    # exchange, which our cipher policy never uses; still, clients expect
    # keyEncipherment on RSA server certificates (RFC 5280 §4.2.1.3).
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa and ExtendedKeyUsageOID.SERVER_AUTH in usages,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
            critical=False,
        )
    )
    if crl_urls:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(url) for url in crl_urls],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def server_names(names: Sequence[str], ips: Sequence[str]) -> tuple[str, list[x509.GeneralName]]:
    """The common name and SAN list of a server certificate for ``names`` and ``ips``."""
    dns = list(dict.fromkeys(check_dns_name(n) for n in names))
    addresses = list(dict.fromkeys(check_ip(i) for i in ips))
    if not dns and not addresses:
        raise PkiError("a server certificate needs at least one DNS name or IP address")
    common_name = dns[0] if dns else str(addresses[0])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(a) for a in addresses]
    return common_name, sans


SERVER_USAGES = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
CLIENT_USAGES = (ExtendedKeyUsageOID.CLIENT_AUTH,)
