"""Internal PKI: a built-in CA, certificate lifecycle, and TLS contexts.

Public API::

    create_ca(directory, *, common_name, key_type="ec", passphrase=None, days=3650)
    load_ca(directory, passphrase=None) -> CertificateAuthority
    CertificateAuthority.issue_server(names, ips, *, days=397, lifetime=None, key_type="ec")
    CertificateAuthority.issue_client(user, domain, *, days=365, lifetime=None, key_type="ec")
    CertificateAuthority.revoke(serial, reason=...) / publish_crl()
    IssuedCertificate.write(cert_path, key_path)
    describe(cert) -> CertInfo
    server_context(cert_path, key_path, *, ca_path=None, require_client_cert=False, crl_path=None)
    client_context(ca_path, *, cert_path=None, key_path=None, crl_path=None)
    mutual_server_context(...) / mutual_client_context(...)     server-to-server mutual TLS
    verify_peer_name(peercert, expected)                           inbound peer's name
    identity_from_peer_cert(peercert, domain) -> ClientIdentity    user client certificates
    requires_tls(uri)                                              sips: means TLS every hop
    ServerTls (conclave.pki.reload), CertificateWatcher (conclave.pki.lifecycle)

Modules: ``ca`` (the CA, its index and CRL), ``leaf`` (X.509 profiles),
``index`` (``ca/index.json``), ``crl``, ``load`` (reading files), ``validate``
(the rules a certificate must pass), ``tls`` (contexts and policy),
``reload`` (hot reload), ``lifecycle`` (renewal, expiry, the server's
watcher), ``inventory`` (list, check, import), ``identity``, ``settings``.

Every failure raises :class:`PkiError` with a one-line message.
"""

from __future__ import annotations

from conclave.pki.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CertificateAuthority,
    IssuedCertificate,
    KeyType,
    create_ca,
    load_ca,
    load_certificate,
    load_certificates,
)
from conclave.pki.errors import PkiError
from conclave.pki.identity import (
    ClientIdentity,
    identity_from_peer_cert,
    requires_tls,
    verify_peer_name,
)
from conclave.pki.info import CertInfo, describe
from conclave.pki.tls import (
    client_context,
    mutual_client_context,
    mutual_server_context,
    server_context,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CertInfo",
    "CertificateAuthority",
    "ClientIdentity",
    "IssuedCertificate",
    "KeyType",
    "PkiError",
    "client_context",
    "create_ca",
    "describe",
    "identity_from_peer_cert",
    "load_ca",
    "load_certificate",
    "load_certificates",
    "mutual_client_context",
    "mutual_server_context",
    "requires_tls",
    "server_context",
    "verify_peer_name",
]
