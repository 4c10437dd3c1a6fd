"""Building small archives on disk for the archive tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conclave.services.archive.record import Record, message_record
from conclave.services.archive.segments import ArchiveLog, list_segments

T0 = 1_795_000_000.0
"""A fixed wall-clock time (2026-11-18) so records are reproducible."""


def message(n: int, *, sender: str = "alice", to: str = "bob", at: float | None = None) -> Record:
    return message_record(
        sender=f"sip:{sender}@example.test",
        recipients=[f"sip:{to}@example.test"],
        time=T0 + n if at is None else at,
        content_type="text/plain",
        body=f"message {n}".encode(),
        conversation_id=f"conv-{n % 3}",
        call_id=f"call-{n}",
        federated=False,
        session=False,
    )


def build(
    directory: Path, count: int, *, segment_size: int = 1 << 20, batch: int = 1
) -> ArchiveLog:
    """An archive of ``count`` messages written ``batch`` at a time."""
    archive = ArchiveLog(directory, segment_size=segment_size)
    archive.create()
    n = 1
    while n <= count:
        archive.append([message(i) for i in range(n, min(n + batch, count + 1))])
        n += batch
    return archive


def lines(directory: Path) -> list[tuple[Path, int, bytes]]:
    """Every (segment, line number, raw line) in chain order."""
    found = []
    for segment in list_segments(directory):
        for number, raw in enumerate(segment.read_bytes().splitlines(), start=1):
            found.append((segment, number, raw))
    return found


def rewrite(segment: Path, edit: Any) -> None:
    """Apply ``edit(list_of_lines) -> list_of_lines`` to one segment file."""
    raw = segment.read_bytes().splitlines()
    segment.write_bytes(b"".join(line + b"\n" for line in edit(raw)))


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for _segment, _number, raw in lines(directory)]
