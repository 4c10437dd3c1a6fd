"""The call tracker behind "In a call": established by 2xx, ended by BYE or the safety timeout."""

from __future__ import annotations

from conclave.services.calls import CallTracker
from conclave.sip.headers import Headers
from conclave.sip.message import Request
from conclave.sip.uri import parse_uri


def invite(call_id: str, caller: str, callee: str) -> Request:
    h = Headers()
    h.add("From", f"<sip:{caller}@Example.TEST>;tag=1")
    h.add("To", f"<sip:{callee}@example.test>")
    h.add("Call-ID", call_id)
    h.add("CSeq", "1 INVITE")
    return Request("INVITE", parse_uri(f"sip:{callee}@example.test"), h)


def tracker() -> tuple[CallTracker, list[tuple[str, bool]]]:
    events: list[tuple[str, bool]] = []
    calls = CallTracker(max_calls=3, max_duration=100.0, clock=lambda: 0.0)
    calls.add_listener(lambda aor, on: events.append((aor, on)))
    return calls, events


def test_answered_invite_puts_both_parties_in_a_call_and_bye_ends_it() -> None:
    calls, events = tracker()
    calls.invite_outcome(invite("c1", "alice", "bob"))(200)
    assert calls.in_call("sip:alice@example.test") and calls.in_call("sip:bob@example.test")
    assert events == [("sip:alice@example.test", True), ("sip:bob@example.test", True)]
    assert calls.ended("c1")
    assert not calls.in_call("sip:alice@example.test")
    assert events[2:] == [("sip:alice@example.test", False), ("sip:bob@example.test", False)]
    assert not calls.ended("c1")


def test_failed_or_cancelled_invite_is_no_call() -> None:
    calls, events = tracker()
    for status in (486, 487, 408, 603):
        calls.invite_outcome(invite(f"c{status}", "alice", "bob"))(status)
    assert len(calls) == 0 and events == []


def test_two_calls_leave_in_a_call_only_when_both_end() -> None:
    calls, events = tracker()
    calls.invite_outcome(invite("c1", "alice", "bob"))(200)
    calls.invite_outcome(invite("c2", "alice", "carol"))(200)
    calls.ended("c1")
    assert calls.in_call("sip:alice@example.test")
    calls.ended("c2")
    assert not calls.in_call("sip:alice@example.test")
    assert events.count(("sip:alice@example.test", True)) == 1


def test_a_second_2xx_of_a_forked_call_counts_once() -> None:
    calls, _ = tracker()
    outcome = calls.invite_outcome(invite("c1", "alice", "bob"))
    outcome(200)
    outcome(200)
    assert len(calls) == 1


def test_table_is_bounded() -> None:
    calls, _ = tracker()
    for i in range(5):
        calls.established(f"c{i}", [f"sip:u{i}@example.test"], now=0.0)
    assert len(calls) == 3
    assert not calls.in_call("sip:u4@example.test")


def test_old_calls_are_swept() -> None:
    calls, events = tracker()
    calls.established("old", ["sip:a@example.test"], now=0.0)
    calls.established("new", ["sip:b@example.test"], now=50.0)
    assert calls.sweep(now=120.0) == 1
    assert not calls.in_call("sip:a@example.test") and calls.in_call("sip:b@example.test")
    assert ("sip:a@example.test", False) in events
