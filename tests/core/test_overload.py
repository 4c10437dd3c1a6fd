"""Overload control (conclave.core.overload): what waited too long gets a 503."""

from __future__ import annotations

from conclave.core.overload import (
    BUSY_NEW_WORK_DELAY,
    NEW_WORK_DELAY,
    PRIORITY_DELAY,
    Admission,
)
from conclave.sip.message import Response
from conclave.sip.parser import Glance, parse_message, peek_kind


def request(method: str, *, to_tag: bool = False) -> bytes:
    tag = ";tag=b1" if to_tag else ""
    return (
        f"{method} sip:bob@example.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.test>;tag=a1\r\n"
        f"To: <sip:bob@example.test>{tag}\r\n"
        "Call-ID: c1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_a_glance_before_parsing() -> None:
    assert peek_kind(request("MESSAGE")) == Glance("MESSAGE", False, False)
    assert peek_kind(request("BYE", to_tag=True)) == Glance("BYE", True, False)
    signed = request("MESSAGE").replace(b"Call-ID", b"Proxy-Authorization: Digest x\r\nCall-ID")
    assert peek_kind(signed) == Glance("MESSAGE", False, True)
    assert peek_kind(b"SIP/2.0 200 OK\r\n\r\n") == Glance("", False, False)
    assert peek_kind(b"garbage") is None


def test_fresh_requests_are_served() -> None:
    assert Admission().refusal(request("MESSAGE"), NEW_WORK_DELAY / 2, 0.0) is None


def test_new_work_that_waited_too_long_gets_a_cheap_503() -> None:
    admission = Admission()
    answer = admission.refusal(request("MESSAGE"), NEW_WORK_DELAY + 0.01, 0.0)
    assert answer
    response = parse_message(answer)
    assert isinstance(response, Response) and response.status == 503
    assert response.headers.get("Retry-After") == "2"
    assert response.to_tag  # §8.2.6.2, the same for a retransmission
    assert (
        parse_message(admission.refusal(request("MESSAGE"), 1.0, 0.0) or b"").to_tag
        == response.to_tag
    )  # type: ignore[union-attr]
    assert admission.refused == 2


def test_refreshes_and_dialogs_wait_longer_than_new_work() -> None:
    admission = Admission()
    between = (NEW_WORK_DELAY + PRIORITY_DELAY) / 2
    assert admission.refusal(request("REGISTER"), between, 0.0) is None
    assert admission.refusal(request("BYE", to_tag=True), between, 0.0) is None
    # An answer to our challenge is the second half of work already begun.
    signed = request("MESSAGE").replace(b"Call-ID", b"Proxy-Authorization: Digest x\r\nCall-ID")
    assert admission.refusal(signed, between, 0.0) is None
    assert admission.refusal(request("INVITE"), between, 0.0)
    assert admission.refusal(request("REGISTER"), PRIORITY_DELAY + 0.01, 0.0)


def test_what_finishes_work_is_never_refused() -> None:
    admission = Admission()
    for data in (request("ACK", to_tag=True), request("CANCEL"), b"SIP/2.0 200 OK\r\n\r\n"):
        assert admission.refusal(data, 10.0, 0.0) is None
    assert admission.refused == 0


def test_while_refusing_new_work_waits_less() -> None:
    # Capacity goes to work already begun: after a refusal, fresh-enough new
    # work is refused too, for a second, while answered challenges still pass.
    admission = Admission()
    assert admission.refusal(request("MESSAGE"), NEW_WORK_DELAY + 0.01, 100.0)
    assert admission.refusal(request("MESSAGE"), BUSY_NEW_WORK_DELAY + 0.01, 100.5)
    signed = request("MESSAGE").replace(b"Call-ID", b"Proxy-Authorization: Digest x\r\nCall-ID")
    assert admission.refusal(signed, NEW_WORK_DELAY, 100.5) is None
    # A second after the last refusal the server is no longer busy.
    assert admission.refusal(request("MESSAGE"), BUSY_NEW_WORK_DELAY + 0.01, 102.0) is None


def test_the_queue_a_garbage_collection_left_is_not_overload() -> None:
    """A 130 ms collection makes the next datagrams look 130 ms old; that backlog is
    served, not refused, while it drains. Waits beyond the pause still count."""
    admission = Admission()
    admission.paused(0.13, now=10.0)
    assert admission.refusal(request("MESSAGE"), 0.13 + NEW_WORK_DELAY / 2, 10.01) is None
    assert admission.refusal(request("MESSAGE"), 0.13 + NEW_WORK_DELAY * 2, 10.02) is not None
    # Long after the pause, the excuse is gone.
    assert admission.refusal(request("MESSAGE"), 0.15, 12.5) is not None
