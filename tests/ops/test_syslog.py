"""RFC 5424 messages and RFC 5425 octet-counting frames."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conclave.ops.syslog import (
    MAX_MESSAGE,
    SD_ID,
    OctetCountingFramer,
    SyslogError,
    event_of,
    format_event,
    frame,
    parse_message,
)

EVENT = {
    "event": "register",
    "level": "info",
    "time": "2025-03-01T10:20:30.123456Z",
    "host": "fe1.example.test",
    "role": "standard",
    "call_id": 'a"b]c\\d',
    "user": "alice",
    "status": 200,
}


def test_format_follows_rfc5424_and_parses_back() -> None:
    data = format_event(EVENT, origin="0123abcd", seq=42, procid=77)
    text = data.decode()
    # <local0.info>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
    assert text.startswith(
        "<134>1 2025-03-01T10:20:30.123456Z fe1.example.test conclave 77 register ["
    )
    message = parse_message(data)
    assert (message.facility, message.severity, message.level) == (16, 6, "info")
    ours = message.structured[SD_ID]
    assert ours == {
        "origin": "0123abcd",
        "seq": "42",
        "role": "standard",
        "call_id": 'a"b]c\\d',
        "user": "alice",
    }
    assert '\\"' in text and "\\]" in text  # SD-PARAM escapes (§6.3.3)
    assert event_of(message) == EVENT


def test_severity_follows_the_level_and_msgid_has_no_spaces() -> None:
    warning = parse_message(format_event({**EVENT, "level": "warning", "event": "source banned"}))
    assert warning.severity == 4 and warning.msgid == "source_banned"
    error = parse_message(format_event({**EVENT, "level": "error"}))
    assert error.severity == 3


def test_a_huge_event_is_cut_to_fit_and_says_so() -> None:
    event = {**EVENT, "message": "x" * (MAX_MESSAGE * 2)}
    data = format_event(event)
    assert len(data) <= MAX_MESSAGE
    carried = event_of(parse_message(data))
    assert carried["truncated"] == "message"
    assert carried["event"] == "register"


def test_foreign_messages_become_events() -> None:
    raw = b"<13>1 2025-03-01T10:20:30Z otherhost sshd 12 - - Accepted publickey"
    event = event_of(parse_message(raw))
    assert event["host"] == "otherhost" and event["event"] == "Accepted publickey"
    assert event["level"] == "notice" and event["app"] == "sshd"


@pytest.mark.parametrize(
    "raw",
    [
        b"hello",
        b"<999>1 2025-03-01T10:20:30Z h a p m -",
        b"<13>1 2025-03-01T10:20:30Z h a p m [bad",
        b"<13>1 2025-03-01T10:20:30Z h a p m -x",
        b"<13>1 2025-03-01T10:20:30Z h a p m \xff",
    ],
)
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(SyslogError):
        parse_message(raw)


def test_framer_reassembles_frames_split_anywhere() -> None:
    messages = [format_event({**EVENT, "seq": i}) for i in range(5)]
    wire = b"".join(frame(m) for m in messages)
    for step in (1, 3, 7, 100, len(wire)):
        framer = OctetCountingFramer()
        got: list[bytes] = []
        for i in range(0, len(wire), step):
            got += framer.feed(wire[i : i + step])
        assert got == messages


@pytest.mark.parametrize("wire", [b"abc ", b"012 x", b"12345678901 ", b"-1 x"])
def test_framer_refuses_bad_lengths(wire: bytes) -> None:
    with pytest.raises(SyslogError):
        OctetCountingFramer().feed(wire)


def test_framer_refuses_oversized_frames_before_buffering_them() -> None:
    framer = OctetCountingFramer(max_message=100)
    with pytest.raises(SyslogError):
        framer.feed(b"101 ")


@given(st.binary(max_size=300))
def test_framer_either_frames_or_refuses(data: bytes) -> None:
    framer = OctetCountingFramer(max_message=1000)
    try:
        for message in framer.feed(data):
            assert len(message) <= 1000
    except SyslogError:
        pass


@given(
    st.dictionaries(
        st.sampled_from(["user", "call_id", "role", "note", "event"]),
        st.text(max_size=40),
        max_size=5,
    )
)
def test_any_event_round_trips(fields: dict[str, str]) -> None:
    event = {"time": "2025-03-01T10:20:30Z", "host": "h", "level": "info", **fields}
    event.setdefault("event", "e")
    carried = event_of(parse_message(format_event(event, origin="o1234567", seq=1)))
    assert json.loads(json.dumps(carried)) == {**event, "time": "2025-03-01T10:20:30Z"}
