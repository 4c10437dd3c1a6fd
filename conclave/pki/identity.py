"""Who is at the other end of a TLS connection, and when TLS is mandatory.

These helpers read the dictionary ``SSLObject.getpeercert()`` returns (what
:meth:`conclave.transport.TransportManager.peer_certificate` gives for a
flow). That dictionary is only filled in for a certificate OpenSSL verified
(chain to our CA, not revoked when a CRL is loaded), so the functions here
check names and bindings, not signatures.

* :func:`verify_peer_name`: mutual TLS between servers. The peer's
  certificate must name the server we expected (RFC 5922 §7: SIP domain
  certificates are matched on subjectAltName; the CN is consulted only when
  there is no SAN).
* :func:`identity_from_peer_cert`: a user's client certificate
  (``conclave certs issue --client``) names the account it is bound to as
  SAN URI ``sip:user@domain``.
* :func:`server_identity`: a *server* certificate (EKU serverAuth, DNS or IP
  names, no user URI) and the names it carries; a user's client certificate
  is refused, so it can never pass for a server (the logging controller
  admits only these).
* :func:`requires_tls`: a ``sips:`` URI means TLS on every hop (RFC 3261
  §19.1, §26.2.2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from conclave.pki.errors import PkiError
from conclave.pki.validate import dns_matches
from conclave.sip.uri import SipURI

PeerCert = Mapping[str, Any]
"""The ``getpeercert()`` dictionary: ``subject``, ``subjectAltName``, ``notAfter``..."""


def _san(peercert: PeerCert, kind: str) -> list[str]:
    return [str(value) for key, value in peercert.get("subjectAltName", ()) if key == kind]


def _common_names(peercert: PeerCert) -> list[str]:
    names = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    return names


def peer_names(peercert: PeerCert) -> list[str]:
    """The host names and IP addresses a peer certificate is valid for."""
    dns = _san(peercert, "DNS")
    ips = _san(peercert, "IP Address")
    if not peercert.get("subjectAltName"):
        dns = _common_names(peercert)  # RFC 6125 §6.4.4: CN only without any SAN
    return dns + ips


def _normal_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        return None


def verify_peer_name(peercert: PeerCert | None, expected: str) -> None:
    """Check that a verified peer certificate names ``expected`` (a host name or IP).

    Use it on inbound server-to-server connections once the handshake is
    done, with the peer the topology says should be there. Raises
    :class:`PkiError` saying what the certificate names instead; close the
    connection then. Outbound connections get the same check from OpenSSL
    through ``server_hostname``.
    """
    if not peercert:
        raise PkiError(f"peer presented no verified certificate (expected {expected})")
    names = peer_names(peercert)
    wanted_ip = _normal_ip(expected)
    if wanted_ip is not None:
        if any(_normal_ip(a) == wanted_ip for a in _san(peercert, "IP Address")):
            return
    elif any(dns_matches(pattern, expected) for pattern in _san(peercert, "DNS")) or (
        not peercert.get("subjectAltName")
        and any(dns_matches(cn, expected) for cn in _common_names(peercert))
    ):
        return
    shown = ", ".join(names) if names else "no names"
    raise PkiError(f"peer certificate is for {shown}, not {expected}")


@dataclass(frozen=True)
class ClientIdentity:
    """The account a verified client certificate is bound to."""

    user: str
    domain: str

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"


def identity_from_peer_cert(peercert: PeerCert | None, domain: str) -> ClientIdentity | None:
    """The user a verified client certificate authenticates, if it is one of ours.

    Returns an identity only when the certificate carries exactly one
    ``sip:user@domain`` URI SAN for ``domain`` (compared case-insensitively;
    the user part exactly) and no DNS or IP SAN, so a server certificate can
    never pass for a user. The caller must still check the account exists
    and is enabled, and that it is the user the request claims to be.
    """
    if not peercert:
        return None
    if _san(peercert, "DNS") or _san(peercert, "IP Address"):
        return None
    uris = [u for u in _san(peercert, "URI") if u.lower().startswith(("sip:", "sips:"))]
    if len(uris) != 1:
        return None
    _, _, rest = uris[0].partition(":")
    user, at, host = rest.rpartition("@")
    if not at or not user or any(c in rest for c in ";?>< "):
        return None
    if host.lower().rstrip(".") != domain.lower().rstrip("."):
        return None
    return ClientIdentity(user=user, domain=host.lower().rstrip("."))


@dataclass(frozen=True)
class ServerIdentity:
    """What a verified server certificate says about the server presenting it."""

    dns: tuple[str, ...]
    """DNS names (lower case, no trailing dot), the common name's first when it is one."""
    ips: tuple[str, ...]
    """IP addresses, normalised."""
    serial: int
    issuer: x509.Name

    @property
    def names(self) -> tuple[str, ...]:
        return self.dns + self.ips

    def names_exactly(self, host: str) -> bool:
        """True when ``host`` is one of the names, literally (no wildcard stands for it)."""
        wanted = _normal_ip(host)
        if wanted is not None:
            return wanted in self.ips
        return host.lower().rstrip(".") in self.dns


def server_identity(der: bytes) -> ServerIdentity:
    """The identity in a verified peer certificate (DER) that must be a server's.

    Raises :class:`PkiError` saying why it is not one: no ``serverAuth`` in
    its extended key usage (a user's client certificate has ``clientAuth``
    only, see :mod:`conclave.pki.leaf`), a ``sip:`` URI naming a user, or no
    DNS or IP name at all. Like the rest of this module it checks names, not
    signatures: pass only a certificate the TLS handshake verified.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise PkiError("the peer certificate cannot be parsed") from None
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise PkiError("not a server certificate: no extended key usage") from None
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        raise PkiError("not a server certificate: no serverAuth (a user's client certificate?)")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError("not a server certificate: no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if any(u.lower().startswith(("sip:", "sips:")) for u in uris):
        raise PkiError("not a server certificate: it names a SIP user")
    dns = [d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName)]
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    if not dns and not ips:
        raise PkiError("not a server certificate: it names no host")
    common = [
        str(a.value).lower().rstrip(".")
        for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    ]
    if common and common[0] in dns:  # the name it was issued for first
        dns.remove(common[0])
        dns.insert(0, common[0])
    return ServerIdentity(
        tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)), cert.serial_number, cert.issuer
    )


def requires_tls(uri: SipURI | str | object) -> bool:
    """True when ``uri`` demands TLS on every hop: a ``sips:`` URI (RFC 3261 §26.2.2).

    The router must then send the request only over TLS flows (never relay
    it onto UDP or TCP), and refuse a ``sips:`` request that arrived over a
    non-TLS flow instead of relaying it (RFC 5630 §3.1.3 explains the model).
    """
    if isinstance(uri, SipURI):
        return uri.secure
    if isinstance(uri, str):
        return uri.strip().lower().startswith("sips:")
    scheme = getattr(uri, "scheme", None)
    return isinstance(scheme, str) and scheme.lower() == "sips"
