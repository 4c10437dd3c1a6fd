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

Contexts that verify peers (mutual TLS, optional client certificates) also
load the CA's CRL and check the peer's leaf against it
(``VERIFY_CRL_CHECK_LEAF``), so a revoked certificate fails the handshake.

Each call builds a fresh context from the files. A server that must pick up
new certificates without a restart uses :class:`conclave.pki.reload.ServerTls`,
which builds a new context per reload and switches new handshakes to it.

Server-to-server connections use mutual TLS: :func:`mutual_server_context`
requires and verifies the peer's certificate; after the handshake the caller
checks that it names the peer it expected with
:func:`conclave.pki.identity.verify_peer_name`. :func:`mutual_client_context`
presents our certificate and checks the server's name through
``server_hostname``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
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


def load_chain_pem(
    context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, *, scratch_dir: Path
) -> None:
    """Load a certificate chain and key given as PEM bytes (already validated).

    OpenSSL reads only files, so the bytes go through a mode 0600 scratch
    file in ``scratch_dir`` (put it beside the key: a directory no one else
    can read), removed at once. Loading the bytes that were validated, not
    the paths again, means a file replaced in between is never used unchecked.
    """
    fd, name = tempfile.mkstemp(prefix=".load-", suffix=".pem", dir=scratch_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        # A callable password: an encrypted key fails instead of prompting on a tty.
        context.load_cert_chain(name, password=lambda: b"")
    except ssl.SSLError as exc:
        raise PkiError(f"OpenSSL refused the certificate: {exc.reason or exc}") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise PkiError(f"cannot stage certificate in {scratch_dir}: {reason}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def load_crl_file(context: ssl.SSLContext, crl_path: Path) -> None:
    """Add the CRL in ``crl_path`` to ``context`` and check every peer leaf against it.

    Without a CRL for the peer's issuer, verification fails: revocation
    checking fails closed.
    """
    if not Path(crl_path).is_file():
        raise PkiError(f"CRL not found: {crl_path} (publish one with `conclave certs crl`)")
    try:
        context.load_verify_locations(cafile=str(crl_path))
    except (ssl.SSLError, OSError) as exc:
        raise PkiError(f"cannot load CRL {crl_path}: {exc}") from None
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


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
    crl_path: Path | None = None,
) -> ssl.SSLContext:
    """Build a server-side context presenting ``cert_path`` (leaf then chain).

    With ``ca_path``, client certificates signed by that CA are requested and
    verified when offered; with ``require_client_cert`` as well, a client
    without one fails the handshake (mutual TLS between servers). With
    ``crl_path``, a revoked client certificate fails too. Read the verified
    peer identity from ``SSLObject.getpeercert()`` after the handshake.
    """
    context = bare_server_context(
        ca_path=ca_path, require_client_cert=require_client_cert, crl_path=crl_path
    )
    _load_chain(context, cert_path, key_path, key_passphrase)
    return context


def bare_server_context(
    *,
    ca_path: Path | None = None,
    require_client_cert: bool = False,
    crl_path: Path | None = None,
) -> ssl.SSLContext:
    """A server context with the policy and peer verification but no certificate yet.

    Load one with :func:`load_chain_pem` (or use :func:`server_context`).
    """
    if require_client_cert and ca_path is None:
        raise PkiError("requiring client certificates needs a CA file to verify them")
    if crl_path is not None and ca_path is None:
        raise PkiError("checking a CRL needs the CA file it belongs to")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(context)
    # TLS 1.3 sends tickets unless told not to; OP_NO_TICKET covers TLS 1.2.
    context.num_tickets = 0
    if ca_path is not None:
        _load_trust(context, ca_path)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        if crl_path is not None:
            load_crl_file(context, crl_path)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(
    ca_path: Path,
    *,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    key_passphrase: bytes | None = None,
    crl_path: Path | None = None,
) -> ssl.SSLContext:
    """Build a client-side context that trusts only the CA(s) in ``ca_path``.

    Hostname checking is on: pass ``server_hostname`` when wrapping or
    connecting. Give ``cert_path``/``key_path`` to present a certificate for
    mutual TLS, and ``crl_path`` to refuse a server whose certificate is revoked.
    """
    if (cert_path is None) != (key_path is None):
        raise PkiError("a client certificate needs both cert_path and key_path")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_policy(context)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    _load_trust(context, ca_path)
    if crl_path is not None:
        load_crl_file(context, crl_path)
    if cert_path is not None and key_path is not None:
        _load_chain(context, cert_path, key_path, key_passphrase)
    return context


def mutual_server_context(
    cert_path: Path,
    key_path: Path,
    *,
    ca_path: Path,
    crl_path: Path | None,
    key_passphrase: bytes | None = None,
) -> ssl.SSLContext:
    """Server side of server-to-server mutual TLS.

    The peer must present a certificate that chains to ``ca_path`` and is not
    in ``crl_path`` (None only where no CRL exists, e.g. a partner's CA);
    otherwise the handshake fails. After it, call
    :func:`conclave.pki.identity.verify_peer_name` with
    ``getpeercert()`` and the peer you expected, and close the connection if
    it raises.
    """
    return server_context(
        cert_path,
        key_path,
        ca_path=ca_path,
        require_client_cert=True,
        key_passphrase=key_passphrase,
        crl_path=crl_path,
    )


def mutual_client_context(
    cert_path: Path,
    key_path: Path,
    *,
    ca_path: Path,
    crl_path: Path | None,
    key_passphrase: bytes | None = None,
) -> ssl.SSLContext:
    """Client side of server-to-server mutual TLS: present our certificate, verify theirs.

    Connect with ``server_hostname`` set to the peer you mean to reach
    (``TransportManager.connect(..., server_hostname=...)``): a certificate
    that does not name it, comes from another CA, or is revoked fails the
    handshake.
    """
    return client_context(
        ca_path,
        cert_path=cert_path,
        key_path=key_path,
        key_passphrase=key_passphrase,
        crl_path=crl_path,
    )
