"""``conclave archive verify``: walk the chain and name the first record that is wrong.

What is checked, in chain order:

1. every line is a JSON object with the chain fields (else: *changed*);
2. ``seq`` is one more than the previous record's (a gap: records *removed*;
   a smaller or larger number in its place: records *reordered*);
3. ``prev`` equals the previous record's ``hash`` (else the previous record
   was changed, or records were removed or reordered);
4. ``hash`` equals the SHA-256 of the record's canonical bytes (else the
   record itself was *changed*);
5. the first record follows the genesis (``seq`` 1) or, after a purge, the
   CHECKPOINT, and that checkpoint is sealed by a ``purge`` record in the
   chain (so a purge cannot be faked by deleting files and writing a
   CHECKPOINT alone);
6. HEAD (the newest record the server made durable) is present in the chain
   with the same hash (else records were removed from the end).

A last line with no newline that HEAD does not cover is a write torn by a
crash; it was never acknowledged, so it is reported as a warning only (the
server cuts it off when it next writes).

What this cannot catch: someone able to rewrite *every* record after the
one they change, and HEAD, can forge a consistent chain. Keep the printed
head hash somewhere else (a ticket, a log server) to pin the chain down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .record import CHAIN_FIELDS, GENESIS, record_hash
from .segments import (
    CHECKPOINT_FILE,
    HEAD_FILE,
    ArchiveError,
    Line,
    iter_lines,
    list_segments,
    read_json,
    segment_start,
)


@dataclass(frozen=True)
class Problem:
    """The first fault found: which record, where, and what."""

    seq: int | None
    """The record number at fault (as it should be, when it is missing)."""
    segment: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f" ({self.segment} line {self.line})" if self.segment else ""
        who = f"record {self.seq}" if self.seq is not None else "archive"
        return f"{who}{where}: {self.message}"


@dataclass
class Report:
    """What :func:`verify` found. ``ok`` means no problem (warnings allowed)."""

    directory: Path
    records: int = 0
    messages: int = 0
    segments: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str | None = None
    purged_through: int | None = None
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            return f"archive verify FAILED: {self.problem}"
        span = f"records {self.first_seq}-{self.last_seq}" if self.records else "no records"
        purged = f"; purged through record {self.purged_through}" if self.purged_through else ""
        return (
            f"archive OK: {self.records} records ({span}, {self.messages} messages) "
            f"in {self.segments} segment(s){purged}; head {self.head_hash or GENESIS}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "directory": str(self.directory),
            "records": self.records,
            "messages": self.messages,
            "segments": self.segments,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_hash": self.head_hash,
            "purged_through": self.purged_through,
            "problem": None if self.problem is None else str(self.problem),
            "problem_seq": None if self.problem is None else self.problem.seq,
            "warnings": self.warnings,
        }


class _Walk:
    """State carried from one record to the next."""

    def __init__(self, report: Report, start_seq: int, start_hash: str) -> None:
        self.report = report
        self.expect = start_seq
        self.prev = start_hash
        self.hashes: dict[int, str] = {}
        self.purges: set[tuple[int, str]] = set()

    def fail(self, seq: int | None, line: Line | None, message: str) -> None:
        self.report.problem = Problem(
            seq,
            line.segment.name if line else None,
            line.number if line else None,
            message,
        )

    def record(self, line: Line) -> bool:
        """Check one record; False once a problem is recorded."""
        expect = self.expect
        try:
            record = json.loads(line.data)
        except ValueError:
            self.fail(expect, line, "is not valid JSON: the record was changed")
            return False
        if not isinstance(record, dict) or any(k not in record for k in CHAIN_FIELDS):
            self.fail(expect, line, "lacks its chain fields: the record was changed")
            return False
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.fail(expect, line, "has a malformed number: the record was changed")
            return False
        if seq > expect:
            self.fail(
                expect,
                line,
                f"is missing: record {seq} is in its place (records removed or reordered)",
            )
            return False
        if seq < expect:
            self.fail(
                seq, line, f"is out of order: found after record {expect - 1} (records reordered)"
            )
            return False
        if record["prev"] != self.prev:
            self.fail(
                seq,
                line,
                f"does not follow record {seq - 1}: the link is broken (record {seq - 1} "
                "changed, or records removed or reordered)",
            )
            return False
        if record_hash(record) != record["hash"]:
            self.fail(seq, line, "has been changed: its hash does not match its content")
            return False
        self.prev = record["hash"]
        self.expect = seq + 1
        self.hashes[seq] = record["hash"]
        report = self.report
        report.records += 1
        report.first_seq = seq if report.first_seq is None else report.first_seq
        report.last_seq = seq
        report.head_hash = record["hash"]
        if record.get("kind") == "message":
            report.messages += 1
        elif record.get("kind") == "purge":
            self.purges.add((int(record.get("through_seq", 0)), str(record.get("through_hash"))))
        return True


def verify(directory: Path) -> Report:
    """Check the whole chain in ``directory``; the report names the first fault."""
    report = Report(directory)
    try:
        _verify(directory, report)
    except (ArchiveError, OSError) as exc:
        report.problem = Problem(None, None, None, str(exc))
    return report


def _verify(directory: Path, report: Report) -> None:
    if not directory.is_dir():
        raise ArchiveError(f"no archive at {directory}")
    checkpoint = read_json(directory / CHECKPOINT_FILE)
    head = read_json(directory / HEAD_FILE)
    segments = list_segments(directory)
    report.segments = len(segments)
    start_seq, start_hash = 1, GENESIS
    if checkpoint is not None:
        start_seq = int(checkpoint["through_seq"]) + 1
        start_hash = str(checkpoint["through_hash"])
        report.purged_through = start_seq - 1
    walk = _Walk(report, start_seq, start_hash)
    torn: Line | None = None
    for index, segment in enumerate(segments):
        named = segment_start(segment)
        first = True
        for line in iter_lines(segment):
            if not line.complete:
                if index == len(segments) - 1:
                    torn = line
                    break
                walk.fail(walk.expect, line, "is cut short: the record was changed")
                return
            if first and index == 0 and checkpoint is not None:
                _resume_inside_purge(walk, line, start_seq)
            if not walk.record(line):
                return
            if first and named != walk.expect - 1:
                walk.fail(walk.expect - 1, line, f"is first in a segment named for record {named}")
                return
            first = False
    if checkpoint is not None:
        sealed = (int(checkpoint["through_seq"]), str(checkpoint["through_hash"]))
        covered = walk.hashes.get(sealed[0])
        if covered is not None and covered != sealed[1]:
            report.problem = Problem(
                sealed[0], None, None, "differs from the purge checkpoint (record changed)"
            )
            return
        if sealed not in walk.purges:
            report.problem = Problem(
                None,
                CHECKPOINT_FILE,
                None,
                f"the purge through record {sealed[0]} is not sealed by a purge record in the "
                "chain (records removed)",
            )
            return
    _check_head(walk, head, torn)


def _resume_inside_purge(walk: _Walk, line: Line, start_seq: int) -> None:
    """A purge interrupted before it deleted every file leaves records the
    checkpoint already covers: verify them from where they start."""
    try:
        record = json.loads(line.data)
        seq, prev = int(record["seq"]), str(record["prev"])
    except (ValueError, KeyError, TypeError):
        return
    if seq >= start_seq:
        return
    walk.expect, walk.prev = seq, (GENESIS if seq == 1 else prev)
    walk.report.warnings.append(
        f"records {seq}-{start_seq - 1} are covered by the purge checkpoint but still present "
        "(an interrupted purge: run it again)"
    )


def _check_head(walk: _Walk, head: dict[str, Any] | None, torn: Line | None) -> None:
    report = walk.report
    last = report.last_seq or (report.purged_through or 0)
    if head is None:
        if report.records:
            report.warnings.append(
                "HEAD is missing: removal of the newest records cannot be ruled out"
            )
        return
    head_seq, head_hash = int(head.get("seq", 0)), str(head.get("hash", ""))
    if head_seq > last:
        report.problem = Problem(
            last + 1,
            torn.segment.name if torn else None,
            torn.number if torn else None,
            f"is missing: HEAD names record {head_seq}, the chain ends at {last} "
            "(records removed from the end)",
        )
        return
    known = walk.hashes.get(head_seq)
    if known is not None and known != head_hash:
        report.problem = Problem(
            head_seq, HEAD_FILE, None, "differs from the record HEAD names (records replaced)"
        )
        return
    if torn is not None:
        report.warnings.append(
            f"{torn.segment.name} line {torn.number}: an incomplete record from a crash "
            "(never acknowledged; the server removes it when it next writes)"
        )
