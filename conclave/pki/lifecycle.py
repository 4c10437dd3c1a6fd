"""Certificate lifecycle: renewal, expiry warnings, CRL upkeep, and the server's watcher.

:func:`renew_files` re-issues a certificate our CA issued, with the same
names and key type and a new key, writes it over the old files and records
the succession in the index. ``conclave certs renew`` uses it, and so does a
running server for its own certificate.

:class:`CertificateWatcher` is the one background task a server runs for
TLS. Every ``[tls] reload_poll`` it:

1. reloads the certificate if its files (or the CA, or the CRL) changed;
2. logs ``certificate expiring`` (at most once a day per certificate) once
   the certificate is within ``warn_before`` of expiry;
3. renews an internal certificate (issued by our CA, CA key readable without
   a passphrase) within ``renew_before`` of expiry, or at once if our CRL
   lists it, then reloads it;
4. re-signs the CRL before it expires, when the CA key is readable, and
   warns when it is not.

Key generation and signing run on a worker thread; contexts change only on
the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509

from conclave.pki.ca import CertificateAuthority, IssuedCertificate, load_ca
from conclave.pki.crl import crl_problem, load_crl, needs_refresh
from conclave.pki.errors import PkiError
from conclave.pki.info import describe
from conclave.pki.leaf import SERVER_DEFAULT_DAYS
from conclave.pki.load import key_type_of, load_certificate
from conclave.pki.reload import ServerTls, TlsFiles, assess_files
from conclave.pki.validate import revoked_in
from conclave.sip.uri import is_ip_address

WARN_REPEAT = dt.timedelta(days=1)
"""How often the expiry warning for one certificate is repeated in the log."""

RETRY_AFTER_FAILURE = dt.timedelta(hours=1)
"""After a failed automatic renewal or CRL refresh, wait this long to retry."""


def relative_to(data_dir: Path | None, path: Path) -> str:
    """``path`` relative to the data directory when inside it (how the index stores paths)."""
    if data_dir is not None:
        try:
            return str(Path(path).resolve().relative_to(Path(data_dir).resolve()))
        except ValueError:
            pass
    return str(Path(path).resolve())


def renew_files(
    ca: CertificateAuthority,
    cert_path: Path,
    key_path: Path,
    *,
    required: Sequence[str] = (),
    days: int | None = None,
    lifetime: dt.timedelta | None = None,
    data_dir: Path | None = None,
) -> tuple[x509.Certificate, IssuedCertificate]:
    """Re-issue the certificate in ``cert_path`` with a new key; write both files.

    Same names (plus any ``required`` ones it lacks), same kind (server or
    client) and key type. Refuses a certificate our CA did not issue. The old
    entry becomes ``superseded`` in the index. Returns (old, new).
    """
    old = load_certificate(cert_path)
    if not ca.issued_by_me(old):
        raise PkiError(
            f"{cert_path} was not issued by our CA ({old.issuer.rfc4514_string()}): "
            "issue a new certificate or import one instead"
        )
    ca.adopt(old)  # so the index can record the succession
    info = describe(old)
    key_type = key_type_of(old)
    sip_uris = [u for u in info.uris if u.lower().startswith("sip:")]
    if sip_uris and not (info.dns_names or info.ip_addresses):
        user, _, domain = sip_uris[0][4:].rpartition("@")
        new = ca.issue_client(user, domain, days=days or 365, lifetime=lifetime, key_type=key_type)
    else:
        names = [*info.dns_names, *(r for r in required if not is_ip_address(r))]
        ips = [*info.ip_addresses, *(r for r in required if is_ip_address(r))]
        new = ca.issue_server(
            names, ips, days=days or SERVER_DEFAULT_DAYS, lifetime=lifetime, key_type=key_type
        )
    new.write(cert_path, key_path)
    ca.record_files(new.serial, relative_to(data_dir, cert_path), relative_to(data_dir, key_path))
    ca.index.supersede(old.serial_number, new.serial)
    return old, new


def renewable_ca(ca_dir: Path, cert: x509.Certificate) -> CertificateAuthority | str:
    """Our CA, if it can renew ``cert`` unattended; otherwise the reason it cannot."""
    try:
        ca = load_ca(ca_dir)
    except PkiError as exc:
        if "passphrase" in str(exc):
            return "the CA key is passphrase-protected: renew with `conclave certs renew`"
        return str(exc)
    if not ca.issued_by_me(cert):
        return "not issued by our CA: replace it yourself"
    return ca


@dataclass(frozen=True)
class RenewalPolicy:
    """When to warn and renew (from ``[tls]`` in conclave.toml)."""

    poll: float = 5.0
    """Seconds between checks of the files, the expiry and the CRL."""
    warn_before: dt.timedelta = dt.timedelta(days=30)
    renew_before: dt.timedelta = dt.timedelta(days=30)
    auto_renew: bool = True


def open_server_tls(
    files: TlsFiles,
    policy: RenewalPolicy,
    *,
    ca_dir: Path,
    data_dir: Path | None = None,
    logger: Any = None,
) -> ServerTls:
    """The server's :class:`ServerTls`, renewing its certificate first if that fixes it.

    A certificate our CA issued whose key matches but which is expired,
    revoked, or missing a required name is re-issued at start-up when
    ``policy.auto_renew`` and the CA key is readable. Anything else that is
    wrong raises :class:`PkiError` naming the file and the reason.
    """
    log = logger if logger is not None else structlog.get_logger("conclave.pki")
    assessment = assess_files(files, dt.datetime.now(dt.UTC))
    candidate = assessment.candidate
    if not assessment.ok and policy.auto_renew and candidate is not None:
        mismatch = any("does not match" in p for p in assessment.problems)
        ca = renewable_ca(ca_dir, candidate.certificate)
        if not mismatch and isinstance(ca, CertificateAuthority):
            old, new = renew_files(
                ca, files.cert, files.key, required=files.required, data_dir=data_dir
            )
            log.info(
                "certificate renewed",
                why=assessment.reason,
                old_fingerprint=describe(old).sha256_fingerprint,
                fingerprint=describe(new.certificate).sha256_fingerprint,
                not_after=new.certificate.not_valid_after_utc.isoformat(),
                path=str(files.cert),
            )
    return ServerTls(files, logger=logger)


class CertificateWatcher:
    """The server's TLS upkeep task: ``asyncio.create_task(watcher.run())``."""

    def __init__(
        self,
        tls: ServerTls,
        policy: RenewalPolicy,
        *,
        ca_dir: Path,
        data_dir: Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        logger: Any = None,
    ) -> None:
        self.tls = tls
        self.policy = policy
        self.ca_dir = ca_dir
        self.data_dir = data_dir
        self.clock = clock or tls.clock
        self.log = logger if logger is not None else structlog.get_logger("conclave.pki")
        self._warned: dict[str, dt.datetime] = {}
        self._renew_failed_at: dt.datetime | None = None
        self._crl_failed_at: dt.datetime | None = None
        self._crl_warned_at: dt.datetime | None = None
        self._not_renewable: tuple[str, str, dt.datetime] | None = None

    async def run(self) -> None:
        """Poll forever; cancel the task to stop. A failing round is logged and retried."""
        while True:
            await asyncio.sleep(self.policy.poll)
            try:
                await self.tick()
            except Exception as exc:  # keep watching; the next round retries
                self.log.error("certificate watch failed", reason=str(exc))

    async def tick(self) -> None:
        """One round of upkeep (the body of :meth:`run`; tests call it directly)."""
        if self.tls.files_changed():
            self.tls.reload("file change")
        await self._check_certificate(self.clock())
        await self._check_crl(self.clock())

    # -- the server certificate ---------------------------------------------------------
    async def _check_certificate(self, now: dt.datetime) -> None:
        info = self.tls.info
        revoked = self._current_revoked()
        within_warn = info.expires_within(now, self.policy.warn_before)
        within_renew = info.expires_within(now, self.policy.renew_before)
        if not (within_warn or within_renew or revoked):
            return
        ca_or_reason = await self._renewer(now)
        can_renew = isinstance(ca_or_reason, CertificateAuthority)
        if within_warn:
            self._warn_expiring(now, can_renew, "" if can_renew else str(ca_or_reason))
        if revoked:
            self.log.error(
                "certificate revoked",
                subject=info.subject,
                fingerprint=info.sha256_fingerprint,
                serial=f"{info.serial:X}",
                auto_renew=can_renew,
            )
        if not (within_renew or revoked) or not isinstance(ca_or_reason, CertificateAuthority):
            return
        if self._renew_failed_at and now - self._renew_failed_at < RETRY_AFTER_FAILURE:
            return
        await self._renew(ca_or_reason, "revoked" if revoked else "expiring")

    async def _renewer(self, now: dt.datetime) -> CertificateAuthority | str:
        """Our CA if it can renew the certificate in use, else why not.

        A negative answer is remembered for :data:`RETRY_AFTER_FAILURE` (per
        certificate), so a locked CA key is not re-read on every poll.
        """
        if not self.policy.auto_renew:
            return "automatic renewal is off ([tls] auto_renew)"
        fingerprint = self.tls.info.sha256_fingerprint
        cached = self._not_renewable
        if cached and cached[0] == fingerprint and now - cached[2] < RETRY_AFTER_FAILURE:
            return cached[1]
        result = await asyncio.to_thread(renewable_ca, self.ca_dir, self.tls.certificate)
        if isinstance(result, CertificateAuthority):
            self._not_renewable = None
        else:
            self._not_renewable = (fingerprint, result, now)
        return result

    def _warn_expiring(self, now: dt.datetime, can_renew: bool, reason: str) -> None:
        info = self.tls.info
        last = self._warned.get(info.sha256_fingerprint)
        if last is not None and now - last < WARN_REPEAT:
            return
        self._warned = {info.sha256_fingerprint: now}
        fields: dict[str, Any] = {
            "subject": info.subject,
            "fingerprint": info.sha256_fingerprint,
            "not_after": info.not_after.isoformat(),
            "days_left": round(info.days_left(now), 3),
            "auto_renew": can_renew,
        }
        if reason:
            fields["reason"] = reason
        self.log.warning("certificate expiring", **fields)

    def _current_revoked(self) -> bool:
        try:
            crl = load_crl(self.tls.files.crl) if self.tls.files.crl.exists() else None
        except PkiError:
            return False
        return revoked_in(crl, self.tls.certificate)

    async def _renew(self, ca: CertificateAuthority, why: str) -> None:
        files = self.tls.files
        try:
            old, new = await asyncio.to_thread(
                renew_files,
                ca,
                files.cert,
                files.key,
                required=files.required,
                data_dir=self.data_dir,
            )
        except PkiError as exc:
            self._renew_failed_at = self.clock()
            self.log.error("certificate renewal failed", reason=str(exc), path=str(files.cert))
            return
        self._renew_failed_at = None
        new_info = describe(new.certificate)
        self.log.info(
            "certificate renewed",
            why=why,
            old_fingerprint=describe(old).sha256_fingerprint,
            fingerprint=new_info.sha256_fingerprint,
            not_after=new_info.not_after.isoformat(),
            path=str(files.cert),
        )
        self.tls.reload("renewal")

    # -- the CRL ------------------------------------------------------------------------
    async def _check_crl(self, now: dt.datetime) -> None:
        path = self.tls.files.crl
        try:
            crl = load_crl(path)
        except PkiError:
            return  # no CRL to keep fresh (reload reports it where it matters)
        if not needs_refresh(crl, now):
            return
        if self._crl_failed_at and now - self._crl_failed_at < RETRY_AFTER_FAILURE:
            return
        try:
            ca = await asyncio.to_thread(load_ca, self.ca_dir)
            fresh = await asyncio.to_thread(ca.publish_crl)
        except PkiError as exc:
            self._crl_failed_at = now
            if self._crl_warned_at is None or now - self._crl_warned_at >= WARN_REPEAT:
                self._crl_warned_at = now
                next_update = crl.next_update_utc
                self.log.warning(
                    "crl expiring",
                    path=str(path),
                    next_update=next_update.isoformat() if next_update else None,
                    problem=crl_problem(crl, now),
                    reason=f"cannot re-sign it: {exc}",
                )
            return
        next_update = fresh.next_update_utc
        self.log.info(
            "crl published",
            path=str(path),
            revoked=len(fresh),
            next_update=next_update.isoformat() if next_update else None,
        )
        self.tls.reload("crl refresh")
