"""The CA's record of every certificate it issued: ``DATA/ca/index.json``.

The index is what makes revocation and renewal possible: ``revoke`` finds a
serial here and marks it, the CRL is built from the revoked entries, and
``renew`` re-issues an entry with the same names. The file is JSON::

    {
      "version": 1,
      "crl_number": 3,
      "crl_urls": ["http://sip.example.test/pki/ca.crl"],
      "certificates": [
        {"serial": "7E1C88BA...", "kind": "server", "subject": "CN=sip.example.test",
         "sans": ["DNS:sip.example.test", "IP:192.0.2.10"], "key_type": "ec",
         "not_before": "2026-01-01T00:00:00+00:00", "not_after": "...",
         "fingerprint": "AB:CD:...", "issued_at": "...", "status": "valid",
         "revoked_at": null, "reason": null, "superseded_by": null,
         "cert_path": "tls/server.crt", "key_path": "tls/server.key", "user": null}
      ]
    }

Serials are upper-case hex (they are 159-bit numbers: JSON numbers would
lose precision in other readers). ``status`` is ``valid``, ``revoked`` or
``superseded`` (renewed; not revoked). Paths are relative to the data
directory when they lie inside it.

Writers take an exclusive ``flock`` on ``.index.lock`` beside the file and
replace the file atomically, so the CLI and a server renewing on its own
never lose each other's updates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias

from conclave.pki.errors import PkiError
from conclave.pki.files import write_public_file

INDEX_FILE = "index.json"
INDEX_VERSION = 1

Status: TypeAlias = Literal["valid", "revoked", "superseded"]
Kind: TypeAlias = Literal["server", "client"]

REVOCATION_REASONS = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
)
"""The RFC 5280 §5.3.1 reason codes an operator can give to ``revoke``."""


def format_serial(serial: int) -> str:
    """A serial number as upper-case hex without separators (how ``list`` prints it)."""
    return f"{serial:X}"


def parse_serial(text: str) -> int:
    """A serial typed by an operator: hex, with or without colons, any case."""
    cleaned = text.strip().replace(":", "").lower().removeprefix("0x")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise PkiError(f"not a certificate serial number (hex expected): {text!r}")
    return int(cleaned, 16)


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


@dataclass(frozen=True)
class IndexEntry:
    """One issued certificate."""

    serial: int
    kind: Kind
    subject: str
    sans: tuple[str, ...]
    """``DNS:name``, ``IP:address`` and ``URI:sip:user@domain`` entries."""
    key_type: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    """SHA-256 of the DER, colon-separated hex."""
    issued_at: dt.datetime
    status: Status = "valid"
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    superseded_by: int | None = None
    cert_path: str | None = None
    key_path: str | None = None
    user: str | None = None
    """For client certificates: the account (``user@domain``) it is bound to."""

    @property
    def serial_hex(self) -> str:
        return format_serial(self.serial)

    @property
    def dns_names(self) -> tuple[str, ...]:
        return tuple(s[4:] for s in self.sans if s.startswith("DNS:"))

    @property
    def ip_addresses(self) -> tuple[str, ...]:
        return tuple(s[3:] for s in self.sans if s.startswith("IP:"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["serial"] = self.serial_hex
        data["sans"] = list(self.sans)
        data["superseded_by"] = (
            None if self.superseded_by is None else format_serial(self.superseded_by)
        )
        for key in ("not_before", "not_after", "issued_at", "revoked_at"):
            value = data[key]
            data[key] = None if value is None else value.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexEntry:
        superseded = data.get("superseded_by")
        return cls(
            serial=int(data["serial"], 16),
            kind=data["kind"],
            subject=data["subject"],
            sans=tuple(data.get("sans", ())),
            key_type=data.get("key_type", "ec"),
            not_before=dt.datetime.fromisoformat(data["not_before"]),
            not_after=dt.datetime.fromisoformat(data["not_after"]),
            fingerprint=data["fingerprint"],
            issued_at=dt.datetime.fromisoformat(data["issued_at"]),
            status=data.get("status", "valid"),
            revoked_at=_time(data.get("revoked_at")),
            reason=data.get("reason"),
            superseded_by=None if superseded is None else int(superseded, 16),
            cert_path=data.get("cert_path"),
            key_path=data.get("key_path"),
            user=data.get("user"),
        )


@dataclass
class IndexState:
    """The whole index while a transaction holds the lock."""

    entries: list[IndexEntry] = field(default_factory=list)
    crl_number: int = 0
    crl_urls: list[str] = field(default_factory=list)
    """Where the CRL is published: every certificate issued names them (CRL
    distribution points). Empty in an index from before they were kept."""

    def find(self, serial: int) -> IndexEntry | None:
        return next((e for e in self.entries if e.serial == serial), None)

    def put(self, entry: IndexEntry) -> None:
        """Add ``entry``, or replace the entry with its serial."""
        for i, existing in enumerate(self.entries):
            if existing.serial == entry.serial:
                self.entries[i] = entry
                return
        self.entries.append(entry)


class CertificateIndex:
    """Reads and updates ``index.json``. Cheap to create; holds no open files."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(".index.lock")

    def read(self) -> IndexState:
        """A snapshot (an empty index if the file does not exist yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return IndexState()
        except OSError as exc:
            raise PkiError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
            if data.get("version") != INDEX_VERSION:
                raise PkiError(f"{self.path}: unknown index version {data.get('version')!r}")
            return IndexState(
                entries=[IndexEntry.from_json(item) for item in data.get("certificates", [])],
                crl_number=int(data.get("crl_number", 0)),
                crl_urls=[str(url) for url in data.get("crl_urls", [])],
            )
        except PkiError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PkiError(f"{self.path} is damaged: {exc}") from None

    def entries(self) -> list[IndexEntry]:
        return self.read().entries

    def find(self, serial: int) -> IndexEntry | None:
        return self.read().find(serial)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[IndexState]:
        """Lock, read, let the caller change the state, then write it back atomically.

        Nothing is written if the body raises.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PkiError(f"cannot lock {self.lock_path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self.read()
            yield state
            self._write(state)
        finally:
            os.close(fd)  # closing releases the flock

    def _write(self, state: IndexState) -> None:
        data = {
            "version": INDEX_VERSION,
            "crl_number": state.crl_number,
            "certificates": [entry.to_json() for entry in state.entries],
        }
        if state.crl_urls:
            data["crl_urls"] = state.crl_urls
        write_public_file(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    def add(self, entry: IndexEntry) -> None:
        with self.transaction() as state:
            state.put(entry)

    def set_paths(self, serial: int, cert_path: str, key_path: str) -> IndexEntry:
        """Remember where an entry's files were written (so ``renew`` can replace them)."""
        with self.transaction() as state:
            entry = state.find(serial)
            if entry is None:
                raise PkiError(f"no certificate with serial {format_serial(serial)} in {self.path}")
            entry = replace(entry, cert_path=cert_path, key_path=key_path)
            state.put(entry)
            return entry

    def supersede(self, old: int, new: int) -> None:
        """Mark ``old`` as renewed by ``new`` (a no-op for an unknown or revoked ``old``)."""
        with self.transaction() as state:
            entry = state.find(old)
            if entry is not None and entry.status == "valid":
                state.put(replace(entry, status="superseded", superseded_by=new))
