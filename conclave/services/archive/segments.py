"""The archive on disk: append-only segment files, HEAD, CHECKPOINT and a lock.

Layout of the archive directory (``[archive] directory``, default
``DATA/archive``)::

    segment-000000000001.jsonl   records 1..n, one canonical JSON object a line
    segment-000000004711.jsonl   the next segment starts at record 4711
    HEAD                         {"seq", "hash"} of the newest durable record
    CHECKPOINT                   {"through_seq", "through_hash"} of the last purge
    .lock                        flock'd by every writer (server, purge)

:class:`ArchiveLog` appends a batch of records under the lock: it numbers
and chains them (:func:`~.record.seal`), writes them with one ``write`` and
makes them durable with one ``fsync`` before returning. Only then may the
caller acknowledge the messages (group commit: a batch is every message
that arrived while the previous ``fsync`` ran).

Before each batch it checks that the segment it holds open is still the
file at its path with the size it left it: if anything else wrote (a purge
from the CLI), or the directory was replaced, it re-reads the chain's tail
from disk, and if that fails the batch fails (the caller refuses the
messages). A record torn by a crash mid-write (never acknowledged: the
fsync had not returned) is cut off when the tail is re-read.

HEAD is rewritten (write + rename, not fsynced) after each batch's fsync, so
it never names a record that is not durable. It lets ``verify`` notice
records removed from the *end* of the chain, which no hash link can show.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .record import GENESIS, Record, seal

SEGMENT_PATTERN = re.compile(r"segment-(\d{12})\.jsonl\Z")
HEAD_FILE = "HEAD"
CHECKPOINT_FILE = "CHECKPOINT"
LOCK_FILE = ".lock"

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
"""A new segment starts beyond this size: large enough that a busy day
fills only a few files, small enough that purging by segment frees space
in useful steps."""

TAIL_CHUNK = 64 * 1024
"""Bytes read at a time when looking backwards for the last record."""


class ArchiveError(Exception):
    """The archive cannot be written or read (the message says why, in one line)."""


@dataclass(frozen=True)
class Line:
    """One raw line of a segment file, where it was found."""

    segment: Path
    number: int
    """1-based line number within the segment."""
    data: bytes
    """Without the newline."""
    complete: bool
    """False for a last line with no newline (a write torn by a crash)."""


def segment_name(first_seq: int) -> str:
    return f"segment-{first_seq:012d}.jsonl"


def segment_start(path: Path) -> int | None:
    match = SEGMENT_PATTERN.fullmatch(path.name)
    return int(match.group(1)) if match else None


def list_segments(directory: Path) -> list[Path]:
    """Segment files in chain order (by their first record number)."""
    found = [p for p in directory.iterdir() if segment_start(p) is not None]
    return sorted(found, key=lambda p: segment_start(p) or 0)


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON state file, or None if it does not exist."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ArchiveError(f"{path}: not a JSON object")
    return data


def write_json(path: Path, data: dict[str, Any], *, durable: bool) -> None:
    """Replace ``path`` atomically (write a temporary file, rename it over)."""
    tmp = path.with_name(f".{path.name}.tmp")
    payload = json.dumps(data, sort_keys=True).encode() + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a created, renamed or removed name in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the archive's writer lock (blocking). Never creates the directory."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def iter_lines(segment: Path) -> Iterator[Line]:
    """Every line of one segment, the last one flagged if it has no newline."""
    with segment.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            complete = raw.endswith(b"\n")
            yield Line(segment, number, raw.rstrip(b"\n"), complete)


def _rfind_newline(fd: int, limit: int) -> int:
    """Offset of the last newline before ``limit`` in an open file, or -1."""
    position = limit
    while position > 0:
        step = min(TAIL_CHUNK, position)
        position -= step
        found = os.pread(fd, step, position).rfind(b"\n")
        if found >= 0:
            return position + found
    return -1


def last_line(fd: int, size: int) -> tuple[bytes | None, int]:
    """(the last complete line of an open file, the offset just after it).

    Bytes after that offset are a torn write. (None, 0) if there is no
    complete line at all.
    """
    newline = _rfind_newline(fd, size)
    if newline < 0:
        return None, 0
    start = _rfind_newline(fd, newline) + 1
    return os.pread(fd, newline - start, start), newline + 1


def read_tail(path: Path) -> tuple[bytes | None, int, int]:
    """(last complete line, where complete lines end, file size) of a segment."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data, end = last_line(fd, size)
        return data, end, size
    finally:
        os.close(fd)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _cut(path: Path, length: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_chain_fields(data: bytes, where: str) -> tuple[int, str]:
    """(seq, hash) of a record line; :class:`ArchiveError` if it is not one."""
    try:
        record = json.loads(data)
        seq, digest = record["seq"], record["hash"]
    except (ValueError, KeyError, TypeError):
        raise ArchiveError(
            f"{where}: last record is unreadable; run conclave archive verify"
        ) from None
    if not isinstance(seq, int) or not isinstance(digest, str):
        raise ArchiveError(f"{where}: last record is malformed; run conclave archive verify")
    return seq, digest


class ArchiveLog:
    """Appends sealed records to the newest segment, durably. Not thread-safe:
    one writer thread per process (the lock orders processes)."""

    def __init__(self, directory: Path, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.seq = 0
        self.last_hash = GENESIS
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._synced = False
        self._head_ino: int | None = None

    def create(self) -> None:
        """Make the directory if there is none (at start-up only: a directory that
        vanishes later is an error, not an invitation to start a new chain)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def append(self, records: list[Record]) -> list[Record]:
        """Seal, write and fsync ``records`` as one batch; return them sealed.

        Raises :class:`ArchiveError` or :class:`OSError` if they are not
        durable; nothing from a failed batch counts as archived.
        """
        try:
            with locked(self.directory):
                return self.append_locked(records)
        except OSError as exc:
            self.invalidate()
            raise ArchiveError(f"archive not writable: {exc.strerror or exc}") from exc

    def append_locked(self, records: list[Record], *, new_segment: bool = False) -> list[Record]:
        """:meth:`append` for a caller that already holds :func:`locked`.

        ``new_segment`` starts a new segment file first (a purge uses it to
        free the newest segment).
        """
        self._sync()
        if new_segment or self._fd is None or self._size >= self.segment_size:
            self._new_segment()
        assert self._fd is not None and self._path is not None
        sealed: list[Record] = []
        lines: list[bytes] = []
        seq, prev = self.seq, self.last_hash
        for record in records:
            seq += 1
            done, line = seal(record, seq=seq, prev=prev)
            prev = done["hash"]
            sealed.append(done)
            lines.append(line)
        data = b"".join(lines)
        before = self._size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, before)
            self.invalidate()
            raise
        self._size = before + len(data)
        self.seq, self.last_hash = seq, prev
        self._head_ino = None
        head = self.directory / HEAD_FILE
        with contextlib.suppress(OSError):
            write_json(head, {"seq": seq, "hash": prev}, durable=False)
            self._head_ino = os.stat(head).st_ino
        return sealed

    def invalidate(self) -> None:
        """Forget the open segment; the next batch re-reads the tail from disk."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._path = None
        self._synced = False

    close = invalidate

    # -- internals -----------------------------------------------------------------------
    def _sync(self) -> None:
        # Another writer (a purge) always replaces HEAD, so a HEAD that is not
        # the one we wrote means our idea of the tail may be stale; so does a
        # segment that is no longer at its path or has changed size.
        if self._synced and self._fd is not None and self._path is not None:
            on_disk = os.stat(self._path)
            held = os.fstat(self._fd)
            if (
                (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
                and held.st_size == self._size
                and self._head_ino == _inode(self.directory / HEAD_FILE)
            ):
                return
        self._recover()

    def _recover(self) -> None:
        """Re-read the chain's tail: the newest segment's last complete record."""
        self.invalidate()
        if not self.directory.is_dir():
            raise ArchiveError(f"{self.directory} is not a directory")
        checkpoint = read_json(self.directory / CHECKPOINT_FILE)
        seq, digest = 0, GENESIS
        if checkpoint is not None:
            seq, digest = int(checkpoint["through_seq"]), str(checkpoint["through_hash"])
        segments = list_segments(self.directory)
        for index in range(len(segments) - 1, -1, -1):
            path = segments[index]
            data, end, size = read_tail(path)
            if index == len(segments) - 1:
                if end < size:
                    # A record torn by a crash mid-write was never acknowledged
                    # (its fsync had not returned): cut it off.
                    _cut(path, end)
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                self._path, self._size = path, end
            if data is not None:
                seq, digest = parse_chain_fields(data, str(path))
                break
        self.seq, self.last_hash = seq, digest
        self._head_ino = _inode(self.directory / HEAD_FILE)
        self._synced = True

    def _new_segment(self) -> None:
        path = self.directory / segment_name(self.seq + 1)
        if self._fd is not None and self._path == path and self._size == 0:
            return  # the newest segment is already the empty one for the next record
        self.invalidate()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._path, self._size = path, 0
        fsync_directory(self.directory)
        self._synced = True
