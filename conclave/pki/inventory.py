"""Which certificates a deployment uses, what state they are in, and imports.

A deployment's certificates, as ``conclave certs list`` and ``check`` see them:

* the internal CA (``[tls] ca``);
* the server certificate (``[tls] cert`` / ``key``), which must cover the
  server's host, its domain and ``sip.<domain>``;
* certificates imported from public CAs for edge-facing names, in
  ``DATA/tls/imported/LABEL/`` (``cert.pem`` leaf then chain, ``key.pem``,
  ``meta.json`` with the names it must cover);
* every other certificate the CA issued (user client certificates,
  certificates for other servers of the pool), from the CA's index.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from conclave.config import Config
from conclave.pki.crl import crl_problem, load_crl
from conclave.pki.errors import PkiError
from conclave.pki.files import write_private_file, write_public_file
from conclave.pki.index import INDEX_FILE, CertificateIndex
from conclave.pki.info import CertInfo, describe
from conclave.pki.load import (
    is_ca_certificate,
    load_certificate,
    load_private_key,
    parse_certificates,
    public_der,
    read_file,
)
from conclave.pki.settings import IMPORTED_DIR, ca_directory, server_required_names
from conclave.pki.validate import assess_pair, revoked_in, uncovered, validity_problem

META_FILE = "meta.json"
_LABEL = re.compile(r"[^a-z0-9.-]+")


@dataclass(frozen=True)
class InUse:
    """One certificate the deployment presents or trusts."""

    role: str
    """``CA``, ``server`` or ``imported LABEL``."""
    cert: Path
    key: Path | None
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    """One line of ``conclave certs list``."""

    role: str
    path: str
    subject: str
    sans: tuple[str, ...]
    issuer: str
    not_after: dt.datetime | None
    fingerprint: str
    serial: str
    status: str

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "path": self.path,
            "subject": self.subject,
            "sans": list(self.sans),
            "issuer": self.issuer,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "fingerprint": self.fingerprint,
            "serial": self.serial,
            "status": self.status,
        }


def imported(data_dir: Path) -> list[InUse]:
    """Certificates imported with ``conclave certs import``, by label."""
    root = Path(data_dir) / IMPORTED_DIR
    out = []
    for directory in sorted(p for p in root.glob("*") if p.is_dir()):
        names: tuple[str, ...] = ()
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            names = tuple(str(n) for n in meta.get("names", ()))
        except (OSError, ValueError, AttributeError):
            pass
        role = f"imported {directory.name}"
        out.append(InUse(role, directory / "cert.pem", directory / "key.pem", names))
    return out


def in_use(data_dir: Path, config: Config) -> list[InUse]:
    """The CA, the server certificate and every imported certificate."""
    tls = config.tls
    return [
        InUse("CA", config.path(data_dir, tls.ca), None),
        InUse(
            "server",
            config.path(data_dir, tls.cert),
            config.path(data_dir, tls.key),
            server_required_names(config),
        ),
        *imported(data_dir),
    ]


def _status(info: CertInfo, now: dt.datetime, revoked: bool, warn: dt.timedelta) -> str:
    if revoked:
        return "revoked"
    problem = validity_problem(info, now)
    if problem:
        return "expired" if problem.startswith("expired") else "not yet valid"
    if info.expires_within(now, warn):
        return f"expiring in {info.days_left(now):.0f} days"
    return "valid"


def _display(data_dir: Path, path: Path) -> str:
    try:
        return str(Path(path).relative_to(data_dir))
    except ValueError:
        return str(path)


def listing(
    data_dir: Path, config: Config, now: dt.datetime, warn: dt.timedelta = dt.timedelta(days=30)
) -> list[Row]:
    """Every certificate in use, then every other certificate the CA issued."""
    ca_dir = ca_directory(data_dir, config)
    index = CertificateIndex(ca_dir / INDEX_FILE).read()
    crl = _read_crl(config.path(data_dir, config.tls.crl))
    issuer = _issuer_name(ca_dir)
    rows: list[Row] = []
    shown: set[int] = set()
    for item in in_use(data_dir, config):
        try:
            cert = load_certificate(item.cert)
        except PkiError as exc:
            rows.append(_unreadable(item.role, _display(data_dir, item.cert), exc))
            continue
        info = describe(cert)
        shown.add(cert.serial_number)
        rows.append(
            Row(
                role=item.role,
                path=_display(data_dir, item.cert),
                subject=info.subject,
                sans=info.tagged_sans,
                issuer=info.issuer,
                not_after=info.not_after,
                fingerprint=info.sha256_fingerprint,
                serial=f"{info.serial:X}",
                status=_status(info, now, revoked_in(crl, cert), warn),
            )
        )
    for entry in index.entries:
        if entry.serial in shown:
            continue
        role = f"client {entry.user}" if entry.kind == "client" else "issued server"
        status: str = entry.status
        if status == "valid":
            if entry.not_after <= now:
                status = "expired"
            elif entry.not_after <= now + warn:
                days = (entry.not_after - now).total_seconds() / 86400
                status = f"expiring in {days:.0f} days"
        rows.append(
            Row(
                role=role,
                path=entry.cert_path or "-",
                subject=entry.subject,
                sans=entry.sans,
                issuer=issuer,
                not_after=entry.not_after,
                fingerprint=entry.fingerprint,
                serial=entry.serial_hex,
                status=status,
            )
        )
    return rows


def _unreadable(role: str, path: str, exc: PkiError) -> Row:
    return Row(role, path, "", (), "", None, "", "", f"unreadable: {exc}")


def _issuer_name(ca_dir: Path) -> str:
    try:
        return describe(load_certificate(ca_dir / "ca.crt")).subject
    except PkiError:
        return "?"


def _read_crl(path: Path) -> x509.CertificateRevocationList | None:
    try:
        return load_crl(path)
    except PkiError:
        return None


def check(data_dir: Path, config: Config, days: float, now: dt.datetime) -> list[str]:
    """Every problem with the certificates in use, one line each naming the certificate.

    A problem is: expiry within ``days``, a required name not covered, no
    chain to a trusted root, a revoked certificate, a key that does not
    match, a file that cannot be read, or a CRL that is missing or expired.
    """
    within = dt.timedelta(days=days)
    problems: list[str] = []
    ca_path = config.path(data_dir, config.tls.ca)
    try:
        ca_cert: x509.Certificate | None = load_certificate(ca_path)
    except PkiError as exc:
        ca_cert = None
        problems.append(f"CA certificate {_display(data_dir, ca_path)}: {exc}")
    crl: x509.CertificateRevocationList | None = None
    crl_path = config.path(data_dir, config.tls.crl)
    if ca_cert is not None:
        info = describe(ca_cert)
        label = f"CA certificate {_display(data_dir, ca_path)}"
        if not info.is_ca:
            problems.append(f"{label}: is not a CA certificate")
        expiry = validity_problem(info, now)
        if expiry:
            problems.append(f"{label}: {expiry}")
        elif info.expires_within(now, within):
            problems.append(
                f"{label}: expires in {info.days_left(now):.1f} days "
                f"({info.not_after:%Y-%m-%d %H:%M} UTC), within the {days:g}-day threshold"
            )
        try:
            crl = load_crl(crl_path, ca_cert)
            bad = crl_problem(crl, now)
            if bad:
                problems.append(f"CRL {_display(data_dir, crl_path)}: {bad}")
        except PkiError as exc:
            problems.append(f"CRL {_display(data_dir, crl_path)}: {exc}")
    for item in in_use(data_dir, config):
        if item.role == "CA":
            continue
        verdict = assess_pair(
            item.cert,
            item.key,
            ca=ca_cert,
            required=item.required,
            crl=crl,
            now=now,
            expiring_within=within,
        )
        label = f"{item.role} certificate {_display(data_dir, item.cert)}"
        problems += [f"{label}: {problem}" for problem in verdict.problems]
    return problems


@dataclass(frozen=True)
class ImportResult:
    label: str
    directory: Path
    info: CertInfo
    names: tuple[str, ...]


def import_certificate(
    data_dir: Path,
    cert_path: Path,
    key_path: Path,
    *,
    chain_path: Path | None = None,
    names: Sequence[str] = (),
    label: str | None = None,
    now: dt.datetime,
) -> ImportResult:
    """Validate a certificate and key from a public CA and store them under ``tls/imported``.

    Refused when: a file is missing or unreadable, the key does not match,
    the certificate is expired or not yet valid, it is a CA certificate, it
    does not cover one of ``names``, or the chain file's first certificate
    did not issue it. ``names`` (default: its DNS names) are what
    ``conclave certs check`` will require it to keep covering.
    """
    cert_bytes = read_file(Path(cert_path), "certificate")
    certs = parse_certificates(cert_bytes, Path(cert_path))
    leaf, chain = certs[0], list(certs[1:])
    if chain_path is not None:
        chain += parse_certificates(read_file(Path(chain_path), "chain"), Path(chain_path))
    key_bytes = read_file(Path(key_path), "key")
    key = load_private_key(Path(key_path), key_bytes, None)
    if public_der(key) != public_der(leaf):
        raise PkiError(f"key {key_path} does not match certificate {cert_path}")
    if is_ca_certificate(leaf):
        raise PkiError(f"{cert_path} is a CA certificate, not a server certificate")
    info = describe(leaf)
    expiry = validity_problem(info, now)
    if expiry:
        raise PkiError(f"{cert_path}: {expiry}")
    wanted = tuple(n.lower() for n in names) or info.dns_names
    if not wanted:
        raise PkiError(f"{cert_path} names no DNS host: give the names it serves with --name")
    missing = uncovered(info, wanted)
    if missing:
        raise PkiError(f"{cert_path} does not cover {', '.join(missing)}")
    if chain:
        try:
            leaf.verify_directly_issued_by(chain[0])
        except (ValueError, TypeError, InvalidSignature):
            raise PkiError(
                f"the chain's first certificate ({chain[0].subject.rfc4514_string()}) "
                f"did not issue {cert_path}"
            ) from None
    name = _LABEL.sub("-", (label or wanted[0]).lower().lstrip("*.")).strip("-.")
    if not name:
        raise PkiError(f"cannot make a directory name from {label or wanted[0]!r}: use --label")
    directory = Path(data_dir) / IMPORTED_DIR / name
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in (leaf, *chain))
    write_private_file(directory / "key.pem", key_bytes)
    write_public_file(directory / "cert.pem", pem)
    meta = {"names": list(wanted), "imported_at": now.isoformat(), "source": str(cert_path)}
    write_public_file(directory / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    return ImportResult(name, directory, info, wanted)
