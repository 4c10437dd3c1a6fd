"""The agent's bounded on-disk FIFO."""

from __future__ import annotations

from pathlib import Path

from conclave.ops.logbuffer import DB_FILE, LogBuffer, read_origin


def test_fifo_in_order_and_survives_reopening(tmp_path: Path) -> None:
    buffer = LogBuffer(tmp_path, max_bytes=10_000)
    assert buffer.append([b"one", b"two", b"three"]) == 0
    assert [p for _, p in buffer.read_after(0, 10)] == [b"one", b"two", b"three"]
    first = buffer.first_seq()
    assert first is not None
    assert [p for _, p in buffer.read_after(first, 1)] == [b"two"]
    assert (buffer.count, buffer.bytes) == (3, 11)
    origin = buffer.origin
    buffer.close()
    again = LogBuffer(tmp_path, max_bytes=10_000)
    assert again.origin == origin and len(origin) == 16
    assert (again.count, again.bytes) == (3, 11)
    assert [p for _, p in again.read_after(0, 10)] == [b"one", b"two", b"three"]
    again.close()


def test_delivered_events_are_deleted_and_numbers_never_reused(tmp_path: Path) -> None:
    buffer = LogBuffer(tmp_path, max_bytes=10_000)
    buffer.append([b"a", b"b"])
    last = buffer.read_after(0, 10)[-1][0]
    assert buffer.delete_through(last) == 2
    assert (buffer.count, buffer.bytes, buffer.first_seq()) == (0, 0, None)
    buffer.close()
    buffer = LogBuffer(tmp_path, max_bytes=10_000)
    buffer.append([b"c"])
    assert buffer.read_after(0, 10)[0][0] == last + 1
    buffer.close()


def test_the_bound_drops_what_does_not_fit(tmp_path: Path) -> None:
    buffer = LogBuffer(tmp_path, max_bytes=10)
    assert buffer.append([b"12345", b"67890", b"x"]) == 1
    assert buffer.bytes == 10
    assert buffer.append([b"y"]) == 1
    buffer.delete_through(buffer.read_after(0, 1)[0][0])
    assert buffer.append([b"abc"]) == 0
    assert [p for _, p in buffer.read_after(0, 10)] == [b"67890", b"abc"]
    buffer.close()


def test_origin_is_replaced_when_damaged(tmp_path: Path) -> None:
    (tmp_path / "origin").write_text("?")
    origin = read_origin(tmp_path)
    assert origin.isalnum() and len(origin) == 16
    assert read_origin(tmp_path) == origin
    assert not (tmp_path / DB_FILE).exists()
