"""Retention purge keeps the chain verifiable; export gives one user's messages."""

from __future__ import annotations

import datetime as dt
import io
import json
import mailbox
from pathlib import Path

from conclave.services.archive.export import export, iter_messages
from conclave.services.archive.purge import purge
from conclave.services.archive.record import message_record
from conclave.services.archive.segments import CHECKPOINT_FILE, ArchiveLog, list_segments
from conclave.services.archive.verify import verify

from .helpers import T0, message, records


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def small_segments(directory: Path, count: int) -> ArchiveLog:
    archive = ArchiveLog(directory, segment_size=600)
    archive.create()
    for n in range(1, count + 1):
        archive.append([message(n)])
    return archive


def test_purge_removes_old_segments_and_verify_still_passes(tmp_path: Path) -> None:
    archive = small_segments(tmp_path, 12)
    before = len(list_segments(tmp_path))
    result = purge(tmp_path, utc(T0 + 7), now=T0 + 100, segment_size=600)
    assert result.segments >= 1 and result.through_seq is not None
    assert result.through_seq < 7
    assert len(list_segments(tmp_path)) < before
    report = verify(tmp_path)
    assert report.ok, report.problem
    assert report.purged_through == result.through_seq
    assert report.first_seq == result.through_seq + 1
    kinds = [r["kind"] for r in records(tmp_path)]
    assert kinds[-1] == "purge"
    # The server's writer notices and continues the chain after the purge record.
    archive.append([message(13)])
    assert verify(tmp_path).ok


def test_purge_of_everything_rotates_the_newest_segment(tmp_path: Path) -> None:
    small_segments(tmp_path, 3)
    result = purge(tmp_path, utc(T0 + 1000), now=T0 + 2000, segment_size=600)
    assert result.records == 3
    remaining = records(tmp_path)
    assert [r["kind"] for r in remaining] == ["purge"]
    assert remaining[0]["seq"] == 4 and remaining[0]["through_seq"] == 3
    assert verify(tmp_path).ok


def test_nothing_old_enough_purges_nothing(tmp_path: Path) -> None:
    small_segments(tmp_path, 3)
    assert purge(tmp_path, utc(T0), segment_size=600).segments == 0
    assert not (tmp_path / CHECKPOINT_FILE).exists()


def test_deleting_old_files_with_a_forged_checkpoint_fails(tmp_path: Path) -> None:
    small_segments(tmp_path, 12)
    first = list_segments(tmp_path)[0]
    last_seq = json.loads(first.read_bytes().splitlines()[-1])
    (tmp_path / CHECKPOINT_FILE).write_text(
        json.dumps({"through_seq": last_seq["seq"], "through_hash": last_seq["hash"]})
    )
    first.unlink()
    report = verify(tmp_path)
    assert not report.ok
    assert "not sealed" in str(report.problem)


def test_interrupted_purge_still_verifies(tmp_path: Path) -> None:
    small_segments(tmp_path, 12)
    saved = {p: p.read_bytes() for p in list_segments(tmp_path)}
    result = purge(tmp_path, utc(T0 + 7), now=T0 + 100, segment_size=600)
    doomed = [p for p in saved if not p.exists()]
    assert result.segments == len(doomed) >= 2
    # As if the purge crashed after deleting only the oldest file (it deletes in order).
    for path in doomed[1:]:
        path.write_bytes(saved[path])
    report = verify(tmp_path)
    assert report.ok, report.problem
    assert any("interrupted purge" in w for w in report.warnings)
    # Running it again finishes the job.
    purge(tmp_path, utc(T0 + 7), now=T0 + 200, segment_size=600)
    assert verify(tmp_path).ok and not any(p.exists() for p in doomed)


def test_export_filters_by_user_and_time(tmp_path: Path) -> None:
    archive = ArchiveLog(tmp_path)
    archive.create()
    archive.append(
        [
            message(1, sender="alice", to="bob"),
            message(2, sender="bob", to="carol"),
            message(3, sender="carol", to="alice"),
            message(4, sender="alice", to="bob"),
        ]
    )
    alice = "sip:alice@example.test"
    assert [r["seq"] for r in iter_messages(tmp_path, user=alice)] == [1, 3, 4]
    assert [r["seq"] for r in iter_messages(tmp_path, user="sip:BOB@example.test")] == [1, 2, 4]
    window = iter_messages(tmp_path, user=alice, since=utc(T0 + 2), until=utc(T0 + 4))
    assert [r["seq"] for r in window] == [3]
    out = io.BytesIO()
    seen: list[int] = []
    assert export(tmp_path, out, "jsonl", user=alice, progress=seen.append) == 3
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["body"] for line in lines] == ["message 1", "message 3", "message 4"]
    assert sum(seen) == sum(p.stat().st_size for p in list_segments(tmp_path))


def test_export_mbox_opens_in_a_mail_library(tmp_path: Path) -> None:
    archive = ArchiveLog(tmp_path)
    archive.create()
    tricky = message_record(
        sender="sip:alice@example.test", recipients=["sip:bob@example.test"], time=T0,
        content_type="text/plain", body=b"From the start\nsecond line", conversation_id="c1",
        call_id="x", federated=False, session=False,
    )  # fmt: skip
    binary = message_record(
        sender="sip:bob@example.test", recipients=["sip:alice@example.test"], time=T0 + 1,
        content_type="application/octet-stream", body=b"\x00\xff", conversation_id="c1",
        call_id="y", federated=False, session=False,
    )  # fmt: skip
    archive.append([tricky, binary])
    path = tmp_path / "out.mbox"
    with path.open("wb") as out:
        assert export(tmp_path, out, "mbox") == 2
    box = mailbox.mbox(path)
    messages = list(box)
    assert len(messages) == 2
    first, second = messages
    assert first["From"] == "alice@example.test" and first["To"] == "bob@example.test"
    assert first["Subject"] == "IM conversation c1"
    payload = first.get_payload(decode=True)
    assert isinstance(payload, bytes) and b"From the start" in payload
    parts = [p for p in second.walk() if p.get_content_type() == "application/octet-stream"]
    assert parts and parts[0].get_payload(decode=True) == b"\x00\xff"
