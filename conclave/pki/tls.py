"""TLS contexts with Conclave's policy.

Policy (the same for servers and clients):

* TLS 1.2 and 1.3 only. TLS 1.0/1.1 are deprecated by RFC 8996, and SIP over
  TLS (RFC 5630 §3.1.3) asks for current TLS.
* For TLS 1.2, only ECDHE key exchange (forward secrecy) with AEAD ciphers
  (AES-GCM, ChaCha20-Poly1305), as RFC 9325 §4.2 recommends. TLS 1.3 suites
  are all AEAD with (EC)DHE already.
* No compression (CRIME), no renegotiation (a cheap CPU-exhaustion lever for
  a remote peer), server cipher preference, and no session tickets: tickets
  would need key rotation across a pool to keep forward secrecy.

Each call builds a fresh context from the files, so a caller reloads
certificates by calling again and using the new context for new connections.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from conclave.pki.ca import load_certificates
from conclave.pki.errors import PkiError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"
"""OpenSSL cipher string for TLS 1.2: ECDHE key exchange, AEAD bulk ciphers."""


def _apply_policy(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_TICKET
    )


def _load_chain(
    context: ssl.SSLContext, cert_path: Path, key_path: Path, passphrase: bytes | None
) -> None:
    # Read the certificate ourselves first for a clear "not found" message;
    # OpenSSL's own errors do not say which file was wrong.
    load_certificates(Path(cert_path))
    if not Path(key_path).is_file():
        raise PkiError(f"key not found: {key_path}")
    try:
        context.load_cert_chain(cert_path, key_path, password=passphrase or None)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise PkiError(f"key {key_path} does not match certificate {cert_path}") from None
        if passphrase or "BAD_DECRYPT" in reason.upper():
            raise PkiError(f"cannot use key {key_path}: wrong or missing passphrase") from None
        raise PkiError(f"cannot use {cert_path} with {key_path}: {reason}") from None
    except OSError as exc:
        raise PkiError(f"cannot read {cert_path} or {key_path}: {exc.strerror or exc}") from None


def _load_trust(context: ssl.SSLContext, ca_path: Path) -> None:
    load_certificates(Path(ca_path))
    try:
        context.load_verify_locations(cafile=str(ca_path))
    except (ssl.SSLError, OSError) as exc:
        raise PkiError(f"cannot load CA certificates from {ca_path}: {exc}") from None


def server_context(
    cert_path: Path,
    key_path: Path,
    *,
    ca_path: Path | None = None,
    require_client_cert: bool = False,
    key_passphrase: bytes | None = None,
) -> ssl.SSLContext:
    """Build a server-side context presenting ``cert_path`` (leaf then chain).

    With ``ca_path``, client certificates signed by that CA are requested and
    verified when offered; with ``require_client_cert`` as well, a client
    without one fails the handshake (mutual TLS between servers). Read the
    verified peer identity from ``SSLObject.getpeercert()`` after the handshake.
    """
    if require_client_cert and ca_path is None:
        raise PkiError("requiring client certificates needs a CA file to verify them")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(context)
    # TLS 1.3 sends tickets unless told not to; OP_NO_TICKET covers TLS 1.2.
    context.num_tickets = 0
    _load_chain(context, cert_path, key_path, key_passphrase)
    if ca_path is not None:
        _load_trust(context, ca_path)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(
    ca_path: Path,
    *,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    key_passphrase: bytes | None = None,
) -> ssl.SSLContext:
    """Build a client-side context that trusts only the CA(s) in ``ca_path``.

    Hostname checking is on: pass ``server_hostname`` when wrapping or
    connecting. Give ``cert_path``/``key_path`` to present a certificate for
    mutual TLS.
    """
    if (cert_path is None) != (key_path is None):
        raise PkiError("a client certificate needs both cert_path and key_path")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_policy(context)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    _load_trust(context, ca_path)
    if cert_path is not None and key_path is not None:
        _load_chain(context, cert_path, key_path, key_passphrase)
    return context
