"""The controller's event store: duplicates dropped, searches in time order."""

from __future__ import annotations

from pathlib import Path

import pytest

from conclave.ops.logstore import LogStore, Received, open_readonly, parse_time


def _event(time: str, host: str, event: str, **fields: object) -> dict[str, object]:
    return {"time": time, "host": host, "role": "standard", "level": "info", "event": event} | (
        fields
    )


def test_duplicates_from_one_origin_are_stored_once(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "events.db")
    first = Received(_event("2025-01-01T00:00:01Z", "a", "x"), "o1", 1, 0.0)
    again = Received(_event("2025-01-01T00:00:01Z", "a", "x"), "o1", 1, 5.0)
    other = Received(_event("2025-01-01T00:00:01Z", "b", "x"), "o2", 1, 0.0)
    foreign = Received(_event("2025-01-01T00:00:01Z", "c", "x"), None, None, 0.0)
    assert store.insert([first, other, foreign]) == 3
    assert store.insert([again, foreign]) == 1  # foreign senders have no identity: kept
    assert store.count() == 4
    store.close()


def test_search_merges_servers_in_time_order(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "events.db")
    store.insert(
        [
            Received(_event("2025-01-01T00:00:03Z", "fe2", "c", call_id="X"), "o2", 1, 0.0),
            Received(
                _event("2025-01-01T00:00:01Z", "fe1", "a", call_id="X", user="Alice"), "o1", 1, 0
            ),
            Received(_event("2025-01-01T00:00:02Z", "fe1", "b", call_id="Y"), "o1", 2, 0.0),
            Received(
                _event("2025-01-01T00:00:04Z", "fe1", "d", aor="sip:alice@example.test"), "o1", 3, 0
            ),
            Received(_event("2025-01-01T00:00:05Z", "fe2", "e", note="100% sure_x"), "o2", 2, 0.0),
        ]
    )
    store.close()
    reader = open_readonly(tmp_path / "events.db")
    assert [e["event"] for e in reader.search()] == ["a", "b", "c", "d", "e"]
    assert [(e["host"], e["event"]) for e in reader.search(call_id="X")] == [
        ("fe1", "a"),
        ("fe2", "c"),
    ]
    assert [e["event"] for e in reader.search(user="alice")] == ["a", "d"]
    assert [e["event"] for e in reader.search(user="alice@example.test")] == ["a", "d"]
    since = parse_time("2025-01-01T00:00:02Z")
    until = parse_time("2025-01-01T00:00:04Z")
    assert [e["event"] for e in reader.search(since=since, until=until)] == ["b", "c", "d"]
    assert [e["event"] for e in reader.search(text="100%")] == ["e"]
    assert reader.search(text="1_0%") == []  # LIKE wildcards are literal
    assert [e["event"] for e in reader.search(limit=2)] == ["a", "b"]
    reader.close()


def test_purge_and_missing_store(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "events.db")
    store.insert([Received(_event("2025-01-01T00:00:01Z", "a", "x"), None, None, 0.0)])
    assert store.purge_before(parse_time("2025-01-02T00:00:00Z") or 0) == 1
    store.close()
    with pytest.raises(FileNotFoundError):
        open_readonly(tmp_path / "nothing.db")


def test_parse_time_forms() -> None:
    assert parse_time("1970-01-01T00:01:00Z") == 60.0
    assert parse_time("1970-01-01T00:01:00") == 60.0
    assert parse_time("1970-01-01T01:01:00+01:00") == 60.0
    assert parse_time("yesterday") is None and parse_time(None) is None
