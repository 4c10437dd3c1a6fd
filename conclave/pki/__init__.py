"""Internal PKI: a built-in CA, server certificates and TLS contexts.

Public API::

    create_ca(directory, *, common_name, key_type="ec", passphrase=None, days=3650)
    load_ca(directory, passphrase=None) -> CertificateAuthority
    CertificateAuthority.issue_server(names, ips, *, days=397, key_type="ec")
    IssuedCertificate.write(cert_path, key_path)
    describe(cert) -> CertInfo
    server_context(cert_path, key_path, *, ca_path=None, require_client_cert=False)
    client_context(ca_path, *, cert_path=None, key_path=None)

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
from conclave.pki.info import CertInfo, describe
from conclave.pki.tls import client_context, server_context

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CertInfo",
    "CertificateAuthority",
    "IssuedCertificate",
    "KeyType",
    "PkiError",
    "client_context",
    "create_ca",
    "describe",
    "load_ca",
    "load_certificate",
    "load_certificates",
    "server_context",
]
