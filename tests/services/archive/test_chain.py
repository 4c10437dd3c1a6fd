"""The hash chain on disk and `verify`: any change, removal or reordering is named."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from conclave.services.archive.record import GENESIS, canonical, record_hash
from conclave.services.archive.segments import HEAD_FILE, ArchiveLog, list_segments
from conclave.services.archive.verify import verify

from .helpers import build, lines, message, records, rewrite


def test_records_are_chained_and_numbered(tmp_path: Path) -> None:
    build(tmp_path, 5, batch=2)
    found = records(tmp_path)
    assert [r["seq"] for r in found] == [1, 2, 3, 4, 5]
    assert found[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(found):
        assert after["prev"] == before["hash"]
    for record in found:
        assert record["hash"] == record_hash(record)
        assert record["body"].startswith("message ")
        assert record["federated"] is False
    head = json.loads((tmp_path / HEAD_FILE).read_text())
    assert head == {"seq": 5, "hash": found[-1]["hash"]}


def test_canonical_bytes_ignore_key_order_and_hash() -> None:
    a = {"b": 1, "a": "é", "hash": "x"}
    b = {"a": "é", "b": 1}
    assert canonical(a) == canonical(b) == '{"a":"é","b":1}'.encode()


def test_intact_archive_verifies(tmp_path: Path) -> None:
    build(tmp_path, 12, batch=5)
    report = verify(tmp_path)
    assert report.ok, report.problem
    assert (report.records, report.messages, report.first_seq, report.last_seq) == (12, 12, 1, 12)
    assert "archive OK: 12 records" in report.summary()


def test_edited_record_is_named(tmp_path: Path) -> None:
    build(tmp_path, 6)
    segment = list_segments(tmp_path)[0]
    rewrite(segment, lambda raw: [r.replace(b"message 4", b"message X") for r in raw])
    report = verify(tmp_path)
    assert not report.ok
    assert report.problem is not None and report.problem.seq == 4
    assert "record 4" in str(report.problem) and "changed" in str(report.problem)
    assert report.problem.line == 4


def test_edited_and_rehashed_record_breaks_the_next_link(tmp_path: Path) -> None:
    build(tmp_path, 6)
    segment = list_segments(tmp_path)[0]

    def forge(raw: list[bytes]) -> list[bytes]:
        record = json.loads(raw[2])
        record["body"] = "forged"
        record["hash"] = record_hash(record)
        raw[2] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        return raw

    rewrite(segment, forge)
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.seq == 4
    assert "record 3 changed" in str(report.problem)


def test_deleted_record_is_named(tmp_path: Path) -> None:
    build(tmp_path, 6)
    rewrite(list_segments(tmp_path)[0], lambda raw: raw[:2] + raw[3:])
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.seq == 3
    assert "record 3" in str(report.problem) and "missing" in str(report.problem)


def test_swapped_records_are_named(tmp_path: Path) -> None:
    build(tmp_path, 6)
    rewrite(list_segments(tmp_path)[0], lambda raw: [raw[0], raw[2], raw[1], *raw[3:]])
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.seq == 2
    assert "reordered" in str(report.problem)


def test_renumbered_swap_is_caught_by_the_links(tmp_path: Path) -> None:
    build(tmp_path, 4)

    def swap_and_renumber(raw: list[bytes]) -> list[bytes]:
        second, third = json.loads(raw[1]), json.loads(raw[2])
        second["seq"], third["seq"] = 3, 2
        dump = lambda r: json.dumps(r, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
        return [raw[0], dump(third), dump(second), raw[3]]

    rewrite(list_segments(tmp_path)[0], swap_and_renumber)
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.seq == 2


def test_removing_the_newest_records_is_caught_by_head(tmp_path: Path) -> None:
    build(tmp_path, 5)
    rewrite(list_segments(tmp_path)[0], lambda raw: raw[:3])
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.seq == 4
    assert "HEAD names record 5" in str(report.problem)


def test_garbage_line_is_named(tmp_path: Path) -> None:
    build(tmp_path, 3)
    rewrite(list_segments(tmp_path)[0], lambda raw: [raw[0], b"{not json", raw[2]])
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.seq == 2
    assert "not valid JSON" in str(report.problem)


def test_torn_last_line_beyond_head_is_a_warning(tmp_path: Path) -> None:
    build(tmp_path, 3)
    segment = list_segments(tmp_path)[0]
    with segment.open("ab") as handle:
        handle.write(b'{"seq":4,"half a rec')
    report = verify(tmp_path)
    assert report.ok, report.problem
    assert any("incomplete record" in w for w in report.warnings)


def test_writer_cuts_a_torn_record_and_continues_the_chain(tmp_path: Path) -> None:
    build(tmp_path, 3)
    segment = list_segments(tmp_path)[0]
    with segment.open("ab") as handle:
        handle.write(b'{"seq":4,"half a rec')
    archive = ArchiveLog(tmp_path)
    sealed = archive.append([message(4)])
    assert sealed[0]["seq"] == 4
    assert verify(tmp_path).ok
    assert [r["seq"] for r in records(tmp_path)] == [1, 2, 3, 4]


def test_segments_rotate_and_verify_across_files(tmp_path: Path) -> None:
    archive = ArchiveLog(tmp_path, segment_size=600)
    archive.create()
    for n in range(1, 11):
        archive.append([message(n)])
    segments = list_segments(tmp_path)
    assert len(segments) > 2
    assert verify(tmp_path).ok
    # Each segment is named for its first record.
    for segment, number, raw in lines(tmp_path):
        if number == 1:
            assert segment.name == f"segment-{json.loads(raw)['seq']:012d}.jsonl"


def test_deleting_a_middle_segment_is_named(tmp_path: Path) -> None:
    archive = ArchiveLog(tmp_path, segment_size=600)
    archive.create()
    for n in range(1, 11):
        archive.append([message(n)])
    segments = list_segments(tmp_path)
    gone = segments[1]
    first_gone = json.loads(gone.read_bytes().splitlines()[0])["seq"]
    gone.unlink()
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.seq == first_gone
    assert "missing" in str(report.problem)


def test_missing_archive_fails(tmp_path: Path) -> None:
    report = verify(tmp_path / "nothing")
    assert not report.ok and "no archive" in report.summary()


@pytest.mark.parametrize("body", [b"\xff\xfe binary", "héllo ✓".encode()])
def test_bodies_round_trip(tmp_path: Path, body: bytes) -> None:
    from conclave.services.archive.record import decode_body, message_record

    record = message_record(
        sender="sip:a@x", recipients=["sip:b@x"], time=0.0, content_type="application/x",
        body=body, conversation_id="c", call_id="c", federated=False, session=True,
    )  # fmt: skip
    archive = ArchiveLog(tmp_path)
    archive.create()
    archive.append([record])
    (stored,) = records(tmp_path)
    assert decode_body(stored) == body
    assert stored["mode"] == "session"
    assert verify(tmp_path).ok


def test_an_empty_newest_segment_is_reused(tmp_path: Path) -> None:
    build(tmp_path, 2)
    # As if a rotation created the next file and the process died before writing.
    (tmp_path / "segment-000000000003.jsonl").touch()
    archive = ArchiveLog(tmp_path)
    archive.append_locked([message(3)], new_segment=True)
    assert [p.name for p in list_segments(tmp_path)][-1] == "segment-000000000003.jsonl"
    assert verify(tmp_path).ok
