"""Judging a certificate and key before they are used: the rules behind reload and ``check``.

:func:`assess_pair` reads a certificate file (leaf, then chain) and its key
and lists every reason not to use them:

* the files are missing or do not parse;
* the key does not match the certificate;
* the certificate is expired, not yet valid, or expires within a threshold;
* it does not chain to a trusted root (our CA; the system's roots for a
  certificate from a public CA, ``SSL_CERT_FILE`` overriding them);
* our CRL lists it;
* it does not cover a name the server must answer to.

Each problem is one short sentence without the file name, so callers can
prefix whatever identifies the certificate ("server certificate tls/server.crt: ...").
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from conclave.pki.errors import PkiError
from conclave.pki.info import CertInfo, describe
from conclave.pki.load import (
    PrivateKey,
    is_ca_certificate,
    load_private_key,
    parse_certificates,
    public_der,
    read_file,
)


def required_names(host: str, domain: str) -> tuple[str, ...]:
    """The names a server's certificate must cover: its host, the SIP domain, ``sip.<domain>``.

    These are the names ``conclave init`` issues for; the host may be an IP
    address, which must then appear as an iPAddress SAN.
    """
    domain = domain.strip().lower().rstrip(".")
    host = host.strip().lower().rstrip(".")
    return tuple(dict.fromkeys([host, domain, f"sip.{domain}"]))


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def dns_matches(pattern: str, name: str) -> bool:
    """RFC 6125 §6.4.3 matching of one dNSName ``pattern`` against a host ``name``.

    A wildcard is honoured only as the whole left-most label and stands for
    exactly one label (``*.example.test`` covers ``sip.example.test``, not
    ``example.test`` nor ``a.b.example.test``).
    """
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]  # ".example.test"
    head, _, tail = name.partition(".")
    return bool(head) and "." + tail == suffix and suffix.count(".") >= 2


def covers(info: CertInfo, name: str) -> bool:
    """True when the certificate summarised by ``info`` is valid for host ``name``."""
    address = _ip(name)
    if address is not None:
        return any(_ip(a) == address for a in info.ip_addresses)
    return any(dns_matches(pattern, name) for pattern in info.dns_names)


def uncovered(info: CertInfo, names: Iterable[str]) -> list[str]:
    """The names in ``names`` that the certificate does not cover, in order."""
    return [name for name in names if not covers(info, name)]


_system_cache: dict[tuple[str, int, int], list[x509.Certificate]] = {}


def system_roots() -> list[x509.Certificate]:
    """The system's trusted roots (``SSL_CERT_FILE`` overrides the default bundle).

    Parsed once per bundle file version; an unreadable bundle gives none.
    """
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile:
        return []
    try:
        st = os.stat(cafile)
    except OSError:
        return []
    key = (cafile, st.st_mtime_ns, st.st_size)
    cached = _system_cache.get(key)
    if cached is None:
        try:
            cached = _parse_bundle(Path(cafile).read_bytes())
        except OSError:
            cached = []
        _system_cache.clear()
        _system_cache[key] = cached
    return cached


_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _parse_bundle(data: bytes) -> list[x509.Certificate]:
    """Each certificate of a system bundle that parses; a few old roots do not (or warn)."""
    out = []
    for block in _PEM_BLOCK.findall(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return out


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> str | None:
    """Why ``leaf`` does not chain to one of ``roots`` at ``now``, or None when it does."""
    if not roots:
        return "does not chain to a trusted root: no trusted roots available"
    builder = PolicyBuilder().store(Store(list(roots))).time(now)
    subject = _verifier_subject(describe(leaf))
    try:
        if subject is None:
            builder.build_client_verifier().verify(leaf, list(intermediates))
        else:
            builder.build_server_verifier(subject).verify(leaf, list(intermediates))
    except VerificationError as exc:
        return f"does not chain to a trusted root ({_short(str(exc))})"
    return None


def _verifier_subject(info: CertInfo) -> DNSName | IPAddress | None:
    """A name the certificate is for, so the chain can be checked with a server policy."""
    for name in info.dns_names:
        # A wildcard stands for one label: check it as some name it covers.
        return DNSName("x" + name[1:] if name.startswith("*.") else name)
    for address in info.ip_addresses:
        return IPAddress(ipaddress.ip_address(address))
    return None  # a client certificate: checked with the client policy


def _short(reason: str) -> str:
    reason = reason.replace("validation failed: ", "").strip()
    return reason.splitlines()[0][:200] if reason else "verification failed"


def revoked_in(crl: x509.CertificateRevocationList | None, cert: x509.Certificate) -> bool:
    """True when ``crl`` is from ``cert``'s issuer and lists its serial."""
    if crl is None or crl.issuer != cert.issuer:
        return False
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def validity_problem(info: CertInfo, now: dt.datetime) -> str | None:
    """Expired or not yet valid at ``now``, or None."""
    if info.not_after <= now:
        return f"expired on {info.not_after:%Y-%m-%d %H:%M} UTC"
    if info.not_before > now:
        return f"not valid until {info.not_before:%Y-%m-%d %H:%M} UTC"
    return None


@dataclass(frozen=True)
class Candidate:
    """A certificate file and key that parse and match, ready to load into a context."""

    cert_pem: bytes
    """The certificate file's bytes as read (leaf then chain)."""
    key_pem: bytes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKey | None
    info: CertInfo


@dataclass(frozen=True)
class Assessment:
    """The verdict on a certificate: what was read and what is wrong with it."""

    candidate: Candidate | None
    """None when the files could not even be read or parsed."""
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        """All problems in one line (empty when there are none)."""
        return "; ".join(self.problems)


def assess_pair(
    cert_path: Path,
    key_path: Path | None,
    *,
    ca: x509.Certificate | None,
    required: Sequence[str] = (),
    crl: x509.CertificateRevocationList | None = None,
    now: dt.datetime,
    expiring_within: dt.timedelta | None = None,
    passphrase: bytes | None = None,
) -> Assessment:
    """Read ``cert_path`` (and ``key_path`` unless None) and list every problem.

    ``ca`` is our CA certificate (trust anchors: :func:`trust_roots`); ``required`` the
    host names or IPs it must cover; ``crl`` our CA's CRL; with
    ``expiring_within``, expiry inside that window is a problem too.
    """
    try:
        cert_pem = read_file(Path(cert_path), "certificate")
        certs = parse_certificates(cert_pem, Path(cert_path))
        key: PrivateKey | None = None
        key_bytes = b""
        if key_path is not None:
            key_bytes = read_file(Path(key_path), "key")
            key = load_private_key(Path(key_path), key_bytes, passphrase)
    except PkiError as exc:
        return Assessment(None, (str(exc),))
    leaf, chain = certs[0], tuple(certs[1:])
    info = describe(leaf)
    candidate = Candidate(cert_pem, key_bytes, leaf, chain, key, info)
    problems: list[str] = []
    if key is not None and public_der(key) != public_der(leaf):
        problems.append(f"key {key_path} does not match certificate {cert_path}")
    if is_ca_certificate(leaf) and required:
        problems.append("is a CA certificate, not a server certificate")
    expiry = validity_problem(info, now)
    if expiry:
        problems.append(expiry)
    elif expiring_within is not None and info.expires_within(now, expiring_within):
        days = info.days_left(now)
        problems.append(
            f"expires in {days:.1f} days ({info.not_after:%Y-%m-%d %H:%M} UTC), "
            f"within the {expiring_within.total_seconds() / 86400:g}-day threshold"
        )
    if not expiry:
        chain_problem = verify_chain(leaf, chain, trust_roots(ca, leaf.issuer), now)
        if chain_problem:
            problems.append(chain_problem)
    if revoked_in(crl, leaf):
        problems.append(f"is revoked (serial {leaf.serial_number:X})")
    missing = uncovered(info, required)
    if missing:
        label = "name" if len(missing) == 1 else "names"
        problems.append(f"does not cover required {label} {', '.join(missing)}")
    return Assessment(candidate, tuple(problems))


def trust_roots(
    ca_cert: x509.Certificate | None, leaf_issuer: x509.Name | None
) -> list[x509.Certificate]:
    """Trust anchors for a leaf: our CA, plus the system roots unless our CA issued it.

    Internal certificates must chain to our CA alone; a certificate from a
    public CA (``conclave certs import``) is judged against the system store.
    """
    roots = [ca_cert] if ca_cert is not None else []
    if ca_cert is None or leaf_issuer != ca_cert.subject:
        roots += system_roots()
    return roots
