"""The server's TLS context, reloaded without a restart.

Theory of operation
-------------------
The listener keeps one *front* :class:`ssl.SSLContext` for its whole life.
Its ``sni_callback``, which OpenSSL calls during every ClientHello (with or
without an SNI name), switches the new connection to the *current* context
(``SSLObject.context = current``). A reload validates the files, builds a
complete new context from the validated bytes and makes it current:

* new handshakes use the new certificate at once;
* connections already open keep the context they were made with, and
  nothing else changes for them;
* a context is freed when its last connection closes, so memory does not
  grow with reloads.

Why a new context rather than ``load_cert_chain`` again on the same one:
OpenSSL keeps one certificate slot per key type, so loading an RSA
certificate into a context that held an ECDSA one would leave the old ECDSA
certificate in use for clients that prefer it; and a context's trust store
only ever grows (a CRL or CA once added cannot be removed, and of two CRLs
with the same thisUpdate the first wins). A fresh context has none of that.

A candidate is refused, and the current context kept, when
:func:`conclave.pki.validate.assess_pair` finds any problem: unreadable or
mismatched files, expired or not yet valid, not chaining to our CA (or, for
a public certificate, the system roots), revoked, or not covering the
required names. Each outcome is logged (``certificate reloaded`` or
``certificate reload refused`` with the reason) and written to a small JSON
status file that ``conclave certs reload`` reads back.

Revocation reaches open connections too. A revoked client certificate fails
new handshakes once the new CRL is loaded, but a connection it authenticated
earlier would keep working (TLS checks the certificate only in the
handshake). So after every reload, whatever its outcome, the CRL on disk is
read (it must be our CA's and signed by it) and every open TLS connection
whose peer certificate it now lists is closed, through
:attr:`ServerTls.peer_closer`, which the server sets to its transport's
:meth:`~conclave.transport.TransportManager.close_tls_connections`. Each is
logged as ``connection closed: certificate revoked`` with the serial.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509

from conclave.pki.crl import load_crl, revoked_serials
from conclave.pki.errors import PkiError
from conclave.pki.files import FileSignature, file_signature, write_public_file
from conclave.pki.info import CertInfo
from conclave.pki.load import load_certificate
from conclave.pki.tls import bare_server_context, load_chain_pem
from conclave.pki.validate import Assessment, Candidate, assess_pair

STATUS_FILE = "tls-status.json"
"""In the data directory: the last reload's outcome, for ``conclave certs reload``."""


PeerCloser = Callable[[Callable[[bytes], bool]], Sequence[tuple[object, bytes]]]
"""Closes the open TLS connections whose peer certificate (DER) the predicate
condemns; returns ``(flow, certificate)`` of each."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class TlsFiles:
    """Where a server's TLS material lives and what its certificate must cover."""

    cert: Path
    """Certificate file: leaf, then chain."""
    key: Path
    """Private key file (unencrypted, mode 0600)."""
    ca: Path
    """Our CA certificate: trust anchor for our certificates and for client certificates."""
    crl: Path
    """Our CA's CRL."""
    required: tuple[str, ...]
    """Host names / IPs the certificate must cover (see ``validate.required_names``)."""
    client_auth: bool = False
    """Request (optionally) and verify client certificates against ``ca`` and ``crl``."""
    status: Path | None = None
    """Where to write the outcome of each reload, or None."""


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did."""

    trigger: str
    reloaded: bool
    reason: str = ""
    """Why it was refused (empty when reloaded)."""
    info: CertInfo | None = None
    """The certificate in use afterwards."""


class ServerTls:
    """A reloadable server TLS context. Give :attr:`context` to the listener once.

    Construction validates the files and raises :class:`PkiError` if they
    cannot be used (the server then refuses to start). Call :meth:`reload`
    on SIGHUP, :meth:`files_changed` from a periodic poll.
    """

    def __init__(
        self,
        files: TlsFiles,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        logger: Any = None,
    ) -> None:
        self.files = files
        self.clock = clock
        self.log = logger if logger is not None else structlog.get_logger("conclave.pki")
        self._seq = 0
        self._pending: FileSignature | None = None
        self._refused: FileSignature | None = None
        self.signature = self._signature()
        assessment = self.assess()
        if not assessment.ok or assessment.candidate is None:
            raise PkiError(f"{files.cert}: {assessment.reason}")
        self._current = self._build(assessment.candidate)
        self.info: CertInfo = assessment.candidate.info
        """The certificate new handshakes get."""
        self.certificate: x509.Certificate = assessment.candidate.certificate
        self.context = self._current
        """The front context: hand it to the listener; it never changes."""
        self.context.sni_callback = self._select
        self.peer_closer: PeerCloser | None = None
        """Set by the server: how to close connections of revoked peers (see the module doc)."""
        self._report(ReloadOutcome("startup", True, info=self.info))

    # -- handshakes ----------------------------------------------------------------------
    def _select(self, sslobj: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        """sni_callback: move this handshake onto the current context."""
        current = self._current
        if context is current:
            return
        try:
            sslobj.context = current
        except Exception as exc:  # keep the front context's certificate rather than abort
            self.log.error("certificate switch failed", reason=str(exc))

    @property
    def current_context(self) -> ssl.SSLContext:
        """The context new handshakes are switched to (changes on every reload)."""
        return self._current

    # -- reloading -----------------------------------------------------------------------
    def assess(self) -> Assessment:
        """Judge the files as they are on disk now (without loading them)."""
        return assess_files(self.files, self.clock())

    def reload(self, trigger: str) -> ReloadOutcome:
        """Validate the files and, if they are good, switch new handshakes to them.

        ``trigger`` says why (``signal``, ``file change``, ``renewal``...) in
        the log. On refusal the current certificate stays in use. Returns
        what happened; it has also been logged and written to the status file.
        """
        signature = self._signature()
        assessment = self.assess()
        candidate = assessment.candidate
        outcome: ReloadOutcome
        if assessment.ok and candidate is not None:
            try:
                context = self._build(candidate)
            except PkiError as exc:
                outcome = ReloadOutcome(trigger, False, str(exc), self.info)
            else:
                self._current = context
                self.info = candidate.info
                self.certificate = candidate.certificate
                outcome = ReloadOutcome(trigger, True, info=self.info)
        else:
            outcome = ReloadOutcome(trigger, False, assessment.reason, self.info)
        self.signature = signature
        self._refused = None if outcome.reloaded else signature
        self._pending = None
        self._report(outcome)
        self.close_revoked_peers(trigger)
        return outcome

    def close_revoked_peers(self, trigger: str) -> int:
        """Close every open TLS connection whose peer certificate our CRL now lists.

        Runs after each reload (a revocation arrives as a new CRL). Returns how
        many were closed. A CRL that cannot be read or is not our CA's closes
        nothing (the reload has logged why it is unusable).
        """
        closer = self.peer_closer
        if closer is None or not self.files.client_auth:
            return 0
        try:
            ca = load_certificate(self.files.ca)
            revoked = revoked_serials(load_crl(self.files.crl, ca))
        except PkiError as exc:
            self.log.warning("revoked peers not checked", reason=str(exc), trigger=trigger)
            return 0
        if not revoked:
            return 0

        def condemned(der: bytes) -> bool:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                return False
            return cert.issuer == ca.subject and cert.serial_number in revoked

        try:
            closed = closer(condemned)
        except Exception as exc:  # a reload must never fail for this; say so loudly
            self.log.error("revoked peers not closed", reason=str(exc), trigger=trigger)
            return 0
        for flow, der in closed:
            cert = x509.load_der_x509_certificate(der)
            self.log.warning(
                "connection closed: certificate revoked",
                flow=str(flow),
                serial=f"{cert.serial_number:X}",
                subject=cert.subject.rfc4514_string(),
                trigger=trigger,
            )
        return len(closed)

    def files_changed(self) -> bool:
        """For a periodic poll: True when the files changed and have settled.

        A change must be seen unchanged on two consecutive polls before it
        counts, so a key written a moment before its certificate is never
        judged half-way. Files already refused are not retried until they
        change again.
        """
        signature = self._signature()
        if signature in (self.signature, self._refused):
            self._pending = None
            return False
        if signature != self._pending:
            self._pending = signature
            return False
        return True

    def _signature(self) -> FileSignature:
        files = self.files
        return file_signature((files.cert, files.key, files.ca, files.crl))

    def _build(self, candidate: Candidate) -> ssl.SSLContext:
        files = self.files
        context = bare_server_context(
            ca_path=files.ca if files.client_auth else None,
            crl_path=files.crl if files.client_auth else None,
        )
        load_chain_pem(context, candidate.cert_pem, candidate.key_pem, scratch_dir=files.key.parent)
        return context

    # -- reporting -----------------------------------------------------------------------
    def _report(self, outcome: ReloadOutcome) -> None:
        info = outcome.info
        fields: dict[str, Any] = {"trigger": outcome.trigger, "path": str(self.files.cert)}
        if info is not None:
            fields |= {
                "subject": info.subject,
                "fingerprint": info.sha256_fingerprint,
                "not_after": info.not_after.isoformat(),
                "sans": list(info.sans),
            }
        if outcome.reloaded:
            self.log.info("certificate reloaded", **fields)
        else:
            # The fields describe the certificate kept in use.
            self.log.error("certificate reload refused", reason=outcome.reason, **fields)
        self._write_status(outcome)

    def _write_status(self, outcome: ReloadOutcome) -> None:
        path = self.files.status
        if path is None:
            return
        self._seq += 1
        info = outcome.info
        status = {
            "pid": os.getpid(),
            "seq": self._seq,
            "time": self.clock().isoformat(),
            "trigger": outcome.trigger,
            "outcome": "reloaded" if outcome.reloaded else "refused",
            "reason": outcome.reason,
            "fingerprint": info.sha256_fingerprint if info else None,
            "not_after": info.not_after.isoformat() if info else None,
            "subject": info.subject if info else None,
        }
        try:
            write_public_file(path, (json.dumps(status) + "\n").encode())
        except PkiError as exc:
            self.log.warning("tls status not written", reason=str(exc))


def assess_files(files: TlsFiles, now: dt.datetime) -> Assessment:
    """Judge a server's certificate files against its CA, CRL and required names."""
    try:
        ca_cert = load_certificate(files.ca)
        crl = load_crl(files.crl, ca_cert) if files.crl.exists() else None
    except PkiError as exc:
        return Assessment(None, (str(exc),))
    if crl is None and files.client_auth:
        return Assessment(None, (f"CRL not found: {files.crl}",))
    return assess_pair(files.cert, files.key, ca=ca_cert, required=files.required, crl=crl, now=now)


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status a server wrote to ``path``, or None if there is none."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
