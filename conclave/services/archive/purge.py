"""Retention: remove old records without breaking the chain.

A purge removes whole segment files whose newest record is older than the
cut-off, oldest first, and stops at the first segment that holds a newer
record. It runs under the archive lock, in this order, so that a crash at
any point leaves an archive that verifies:

1. append a ``purge`` record naming the last removed record (its number and
   hash: the hash of the whole purged prefix, since each hash covers the one
   before); if the newest segment itself is old, the purge record starts a
   new segment so the old one can go;
2. write CHECKPOINT (the same number and hash) durably;
3. delete the segment files and make the deletion durable.

``verify`` then starts from CHECKPOINT instead of the genesis and requires a
``purge`` record in the remaining chain that seals it: removing old files by
hand, even with a forged CHECKPOINT, fails verification.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .record import format_time, parse_time, purge_record
from .segments import (
    CHECKPOINT_FILE,
    DEFAULT_SEGMENT_SIZE,
    ArchiveError,
    ArchiveLog,
    fsync_directory,
    list_segments,
    locked,
    read_tail,
    segment_start,
    write_json,
)


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed (nothing: ``segments == 0``)."""

    records: int
    segments: int
    through_seq: int | None


def _newest(segment: Path) -> tuple[int, str, dt.datetime] | None:
    """(seq, hash, time) of a segment's last complete record; None if it has none."""
    data, _end, _size = read_tail(segment)
    if data is None:
        return None
    try:
        record = json.loads(data)
        return int(record["seq"]), str(record["hash"]), parse_time(str(record["time"]))
    except (ValueError, KeyError, TypeError):
        raise ArchiveError(
            f"{segment.name}: last record is unreadable; run archive verify"
        ) from None


def purge(
    directory: Path,
    before: dt.datetime,
    *,
    now: float | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> PurgeResult:
    """Remove every whole segment whose records are all older than ``before``."""
    if not directory.is_dir():
        raise ArchiveError(f"no archive at {directory}")
    with locked(directory):
        segments = list_segments(directory)
        doomed: list[Path] = []
        through: tuple[int, str] | None = None
        for segment in segments:
            newest = _newest(segment)
            if newest is None:
                if segment is segments[-1]:
                    break
                doomed.append(segment)
                continue
            seq, digest, when = newest
            if when >= before:
                break
            doomed.append(segment)
            through = (seq, digest)
        if through is None:
            return PurgeResult(0, 0, None)
        first = segment_start(doomed[0]) or 1
        removed = through[0] - first + 1
        log = ArchiveLog(directory, segment_size=segment_size)
        try:
            log.append_locked(
                [
                    purge_record(
                        time=time.time() if now is None else now,
                        through_seq=through[0],
                        through_hash=through[1],
                        before=format_time(before),
                        removed=removed,
                    )
                ],
                new_segment=bool(segments) and doomed[-1] == segments[-1],
            )
        finally:
            log.close()
        write_json(
            directory / CHECKPOINT_FILE,
            {
                "through_seq": through[0],
                "through_hash": through[1],
                "before": format_time(before),
            },
            durable=True,
        )
        for segment in doomed:
            segment.unlink()
        fsync_directory(directory)
        return PurgeResult(removed, len(doomed), through[0])
