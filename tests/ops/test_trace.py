"""On-demand debug sessions: control file, matching, expiry, credential redaction."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import structlog

from conclave.ops import trace
from conclave.ops.trace import (
    CONTROL_FILE,
    DebugSession,
    Tracer,
    add_session,
    read_sessions,
    redact,
    remove_sessions,
)

REGISTER = (
    "REGISTER sip:example.test SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK1\r\n"
    "From: <sip:alice@example.test>;tag=1\r\n"
    "To: <sip:alice@example.test>\r\n"
    "Call-ID: reg-1@192.0.2.1\r\n"
    "CSeq: 2 REGISTER\r\n"
    'Authorization: Digest username="alice", realm="example.test", nonce="n0nce",\r\n'
    ' uri="sip:example.test", response="0123456789abcdef0123456789abcdef", cnonce="c",\r\n'
    "\tnc=00000001, qop=auth, algorithm=SHA-256\r\n"
    "Content-Length: 0\r\n\r\n"
)

CHALLENGE = (
    "SIP/2.0 407 Proxy Authentication Required\r\n"
    "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK2\r\n"
    "From: <sip:bob@example.test>;tag=2\r\n"
    "To: <sip:carol@example.test>;tag=3\r\n"
    "Call-ID: msg-9\r\n"
    "CSeq: 1 MESSAGE\r\n"
    'proxy-authenticate: Digest realm="example.test", nonce="secret-nonce", opaque="op"\r\n'
    'Authentication-Info: nextnonce="nn", rspauth="feed"\r\n'
    "Content-Length: 0\r\n\r\n"
)


def test_redaction_keeps_scheme_username_realm_only() -> None:
    text = redact(REGISTER)
    assert "0123456789abcdef" not in text and "n0nce" not in text and "cnonce" not in text
    assert "nc=00000001" not in text  # the folded continuation lines went too
    assert 'Authorization: Digest username="alice", realm="example.test" <redacted>\r' in text
    assert text.endswith("Content-Length: 0\r\n\r\n")
    assert "Call-ID: reg-1@192.0.2.1\r\n" in text


def test_redaction_of_challenges_any_case() -> None:
    text = redact(CHALLENGE)
    assert "secret-nonce" not in text and "rspauth" not in text and '"nn"' not in text
    assert 'proxy-authenticate: Digest realm="example.test" <redacted>' in text
    assert "Authentication-Info: <redacted>" in text


@pytest.mark.parametrize(
    "header",
    ["Authorization: Basic YWxpY2U6c2VjcmV0", "Security-Client: digest;d-alg=md5;q=0.1"],
)
def test_other_credentials_are_redacted(header: str) -> None:
    text = redact(f"OPTIONS sip:x SIP/2.0\r\n{header}\r\n\r\n")
    secret = header.split(" ", 1)[1].split(" ", 1)[-1]
    assert secret not in text and "<redacted>" in text


def test_control_file_round_trip(tmp_path: Path) -> None:
    session = add_session(tmp_path, seconds=600, user="Alice", now=1000.0)
    other = add_session(tmp_path, seconds=60, call_id="abc@h", now=1000.0)
    assert (session.user, session.until) == ("alice", 1600.0)
    assert read_sessions(tmp_path) == [session, other]
    assert os.stat(tmp_path / CONTROL_FILE).st_mode & 0o777 == 0o600
    assert remove_sessions(tmp_path, call_id="abc@h") == [other]
    assert read_sessions(tmp_path) == [session]
    assert remove_sessions(tmp_path) == [session]
    assert read_sessions(tmp_path) == []


def test_control_file_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        add_session(tmp_path, seconds=60)
    with pytest.raises(ValueError, match="duration"):
        add_session(tmp_path, seconds=25 * 3600, user="a")
    with pytest.raises(ValueError, match="duration"):
        add_session(tmp_path, seconds=0, user="a")
    # Expired sessions are pruned when a new one is added.
    add_session(tmp_path, seconds=10, user="old", now=0.0)
    add_session(tmp_path, seconds=10, user="new", now=100.0)
    assert [s.user for s in read_sessions(tmp_path)] == ["new"]
    (tmp_path / CONTROL_FILE).write_text("{not json")
    assert read_sessions(tmp_path) == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def traced() -> Any:
    with structlog.testing.capture_logs() as events:
        yield events


def _traces(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "sip trace"]


def test_user_session_follows_the_call(traced: list[dict[str, Any]]) -> None:
    clock = Clock()
    tracer = Tracer(clock)
    tracer.set_sessions([DebugSession("s1", until=1600.0, user="alice")])
    assert tracer.active
    peer = ("192.0.2.1", 5061)
    tracer.message("in", REGISTER.encode(), "tls", peer)
    answer = "SIP/2.0 200 OK\r\nCall-ID: reg-1@192.0.2.1\r\nCSeq: 2 REGISTER\r\n\r\n"
    tracer.message("out", answer.encode(), "tls", peer)
    tracer.message("in", CHALLENGE.encode(), "tls", peer)  # bob and carol: not traced
    traces = _traces(traced)
    assert [(t["direction"], t["call_id"]) for t in traces] == [
        ("in", "reg-1@192.0.2.1"),
        ("out", "reg-1@192.0.2.1"),
    ]
    assert "response=" not in traces[0]["message"]
    assert traces[0]["peer"] == "192.0.2.1:5061" and traces[0]["session"] == "s1"
    assert tracer.wants_event({"event": "register", "user": "alice"})
    assert tracer.wants_event({"event": "x", "call_id": "reg-1@192.0.2.1"})
    assert not tracer.wants_event({"event": "x", "user": "bob"})


def test_call_id_session_and_expiry(traced: list[dict[str, Any]]) -> None:
    clock = Clock()
    tracer = Tracer(clock)
    tracer.set_sessions([DebugSession("s2", until=1010.0, call_id="msg-9")])
    tracer.message("in", CHALLENGE.encode(), "udp", ("192.0.2.2", 5060))
    assert len(_traces(traced)) == 1
    assert tracer.next_end() == 1010.0
    clock.now = 1010.0  # the time is up: the next message ends the session by itself
    tracer.message("in", CHALLENGE.encode(), "udp", ("192.0.2.2", 5060))
    assert not tracer.active and tracer.next_end() is None
    assert len(_traces(traced)) == 1
    ended = [e for e in traced if e["event"] == "debug session ended"]
    assert ended and ended[0]["reason"] == "time is up"


def test_set_sessions_logs_start_and_stop(traced: list[dict[str, Any]]) -> None:
    tracer = Tracer(Clock())
    session = DebugSession("s3", until=2000.0, user="bob")
    tracer.set_sessions([session])
    tracer.set_sessions([session])  # unchanged: logged once
    tracer.set_sessions([])
    names = [e["event"] for e in traced]
    assert names == ["debug session started", "debug session ended"]
    assert traced[1]["reason"] == "stopped"
    expired = DebugSession("s4", until=10.0, user="bob")
    tracer.set_sessions([expired])
    assert not tracer.active


def test_the_process_tracer_is_idle_by_default() -> None:
    assert trace.TRACER.active is False
