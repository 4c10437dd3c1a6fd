"""Writing key and certificate files safely.

Private keys are created with mode 0600 from the first byte: the file is made
with ``os.open(..., 0o600)`` under a temporary name in the same directory and
then renamed over the destination, so no reader ever sees a world-readable key,
a half-written key, or the old key's permissions carried over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from conclave.pki.errors import PkiError

PRIVATE_MODE = 0o600
"""Owner read/write only: private keys."""

PUBLIC_MODE = 0o644
"""Certificates are public documents."""


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 (replacing any file there)."""
    _write_atomic(path, data, PRIVATE_MODE)


def write_public_file(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0644 (replacing any file there)."""
    _write_atomic(path, data, PUBLIC_MODE)


def shared_secret(path: Path, octets: int = 32) -> str:
    """The secret in ``path``, made (``octets`` random octets, hex, mode 0600) when the
    file does not exist yet; it is never replaced once made."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    secret = os.urandom(octets).hex()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
    return secret


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never follow or reuse a file someone else planted at the temp name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            # The umask may have removed bits we want (never added any): set exactly.
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PkiError(f"cannot write {path}: {exc.strerror or exc}") from exc


FileSignature = tuple[tuple[int, int, int] | None, ...]
"""What :func:`file_signature` returns: (inode, size, mtime) per file, None if missing."""


def file_signature(paths: Iterable[Path]) -> FileSignature:
    """A cheap fingerprint of ``paths``: it changes when any file is replaced,
    rewritten or removed. Poll it, and reload once it has settled."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)
