"""Client transactions (RFC 3261 §17.1) driven by a stepped clock."""

from __future__ import annotations

import pytest

from conclave.sip.errors import LocalProtocolError
from conclave.sip.message import Request
from conclave.sip.transaction import (
    ClientTransaction,
    ResponseReceived,
    State,
    Timer,
    TimerConfig,
    TransactionTimeout,
    Transmit,
    make_ack,
    make_cancel,
)

from .test_transaction_support import DEST, first_line, kinds, reparse, request, response, sent


def run_until_terminated(txn: ClientTransaction) -> list[tuple[float, list[str]]]:
    """Jump from deadline to deadline, recording what fired when."""
    log: list[tuple[float, list[str]]] = []
    while (deadline := txn.next_deadline()) is not None:
        log.append((deadline, kinds(txn.handle_timer(deadline))))
    return log


def test_invite_udp_timer_a_doubles_then_timer_b_times_out() -> None:
    txn = ClientTransaction(request("INVITE"), DEST, reliable=False)
    events = txn.start(0.0)
    assert kinds(events) == ["Transmit"]
    assert txn.state is State.CALLING
    log = run_until_terminated(txn)
    retransmits = [t for t, k in log if k == ["Transmit"]]
    # Timer A: 0.5, 1, 2, 4, 8, 16 s apart (§17.1.1.2), no cap for INVITE.
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert log[-1] == (32.0, ["TransactionTimeout", "TransactionTerminated"])
    assert txn.terminated


def test_invite_timeout_names_timer_b() -> None:
    txn = ClientTransaction(request("INVITE"), DEST, reliable=True)
    txn.start(0.0)
    assert txn.next_deadline() == 32.0  # Timer B only: no retransmission over TCP
    events = txn.handle_timer(32.0)
    timeout = events[0]
    assert isinstance(timeout, TransactionTimeout) and timeout.timer is Timer.B


def test_non_invite_udp_timer_e_caps_at_t2_then_timer_f() -> None:
    txn = ClientTransaction(request("OPTIONS"), DEST, reliable=False)
    txn.start(0.0)
    log = run_until_terminated(txn)
    retransmits = [t for t, k in log if k == ["Transmit"]]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-1] == (32.0, ["TransactionTimeout", "TransactionTerminated"])


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    req = request("REGISTER")
    txn = ClientTransaction(req, DEST, reliable=False)
    txn.start(0.0)
    assert kinds(txn.handle_timer(0.5)) == ["Transmit"]
    assert kinds(txn.receive_response(response(req, 100), 0.7)) == ["ResponseReceived"]
    assert txn.state is State.PROCEEDING
    log = run_until_terminated(txn)
    retransmits = [t for t, k in log if k == ["Transmit"]]
    # E keeps its pending deadline (0.5 + 1), then is reset to T2 each time.
    assert retransmits[:4] == [1.5, 5.5, 9.5, 13.5]
    assert retransmits[-1] == 29.5
    assert log[-1][0] == 32.0


def test_non_invite_final_absorbs_retransmissions_until_timer_k() -> None:
    req = request("OPTIONS")
    txn = ClientTransaction(req, DEST, reliable=False)
    txn.start(0.0)
    ok = response(req, 200)
    assert kinds(txn.receive_response(ok, 0.1)) == ["ResponseReceived"]
    assert txn.state is State.COMPLETED
    assert txn.receive_response(ok, 0.2) == []  # absorbed
    assert txn.receive_response(response(req, 180), 0.3) == []
    assert txn.next_deadline() == pytest.approx(5.1)  # Timer K = T4
    assert kinds(txn.handle_timer(5.1)) == ["TransactionTerminated"]


def test_non_invite_reliable_terminates_at_once_k_zero() -> None:
    req = request("OPTIONS", transport="TCP")
    txn = ClientTransaction(req, DEST, reliable=True)
    assert kinds(txn.start(0.0)) == ["Transmit"]
    assert set(txn.deadlines()) == {Timer.F}
    assert txn.next_deadline() == 32.0  # F only, no E
    events = txn.receive_response(response(req, 200), 1.0)
    assert kinds(events) == ["ResponseReceived", "TransactionTerminated"]
    assert txn.next_deadline() is None


def test_invite_non_2xx_is_acked_by_the_transaction() -> None:
    req = request(
        "INVITE",
        extra=[
            "Route: <sip:p1.example.com;lr>",
            "Route: <sip:p2.example.com;lr>",
            "Via: SIP/2.0/UDP second.example.com;branch=z9hG4bKother",
            "Contact: <sip:alice@pc33.example.com>",
        ],
    )
    txn = ClientTransaction(req, DEST, reliable=False)
    txn.start(0.0)
    txn.receive_response(response(req, 180), 0.2)
    busy = response(req, 486, to_tag="busy7")
    events = txn.receive_response(busy, 1.0)
    assert kinds(events) == ["ResponseReceived", "Transmit"]
    assert txn.state is State.COMPLETED
    ack = reparse(sent(events)[0])
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert str(ack.uri) == str(req.uri)
    assert ack.headers.get_all("Via") == [req.headers.get("Via")]
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    assert ack.headers.get("To") == busy.headers.get("To")
    assert (ack.headers.get("To") or "").endswith(";tag=busy7")
    assert ack.headers.get("From") == req.headers.get("From")
    assert ack.headers.get("Call-ID") == req.headers.get("Call-ID")
    assert ack.headers.get("CSeq") == "314159 ACK"
    assert "Contact" not in ack.headers
    # A retransmitted final is absorbed by re-sending the same ACK (§17.1.1.2).
    again = txn.receive_response(busy, 2.0)
    assert sent(again) == sent(events)
    assert not [e for e in again if isinstance(e, ResponseReceived)]
    # Timer D: at least 32 s over UDP.
    assert txn.next_deadline() == 33.0
    assert kinds(txn.handle_timer(33.0)) == ["TransactionTerminated"]


def test_invite_non_2xx_over_reliable_transport_ends_at_once() -> None:
    req = request("INVITE", transport="TLS")
    txn = ClientTransaction(req, DEST, reliable=True)
    txn.start(0.0)
    events = txn.receive_response(response(req, 603), 1.0)
    assert kinds(events) == ["ResponseReceived", "Transmit", "TransactionTerminated"]
    assert first_line(sent(events)[0]).startswith("ACK ")


def test_invite_2xx_is_not_acked_and_goes_to_accepted() -> None:
    req = request("INVITE")
    txn = ClientTransaction(req, DEST, reliable=False)
    txn.start(0.0)
    ok = response(req, 200)
    events = txn.receive_response(ok, 0.3)
    assert kinds(events) == ["ResponseReceived"]  # no ACK: the TU sends it
    assert txn.state is State.ACCEPTED
    assert txn.last_response is ok
    # RFC 6026 §7.2: retransmitted (or forked) 2xx still reach the TU.
    assert kinds(txn.receive_response(ok, 1.0)) == ["ResponseReceived"]
    other_fork = response(req, 200, to_tag="fork2")
    assert kinds(txn.receive_response(other_fork, 1.5)) == ["ResponseReceived"]
    assert txn.receive_response(response(req, 486), 2.0) == []
    assert txn.next_deadline() == pytest.approx(32.3)  # Timer M
    assert kinds(txn.handle_timer(32.3)) == ["TransactionTerminated"]


def test_invite_provisional_stops_retransmission_and_timer_b() -> None:
    req = request("INVITE")
    txn = ClientTransaction(req, DEST, reliable=False)
    txn.start(0.0)
    assert kinds(txn.receive_response(response(req, 100, to_tag=None), 0.2)) == ["ResponseReceived"]
    assert txn.state is State.PROCEEDING
    assert txn.next_deadline() is None  # RFC 3261 Figure 5: no timer in Proceeding
    assert kinds(txn.receive_response(response(req, 180), 1.0)) == ["ResponseReceived"]


def test_transport_error_terminates_and_reports() -> None:
    txn = ClientTransaction(request("MESSAGE"), DEST, reliable=False)
    txn.start(0.0)
    assert kinds(txn.transport_error(0.0)) == ["TransportFailed", "TransactionTerminated"]
    assert txn.transport_error(0.1) == []  # nothing left to fail


def test_transmit_carries_destination_and_transaction() -> None:
    txn = ClientTransaction(request("OPTIONS"), DEST, reliable=False)
    (event,) = txn.start(0.0)
    assert isinstance(event, Transmit)
    assert event.destination == DEST and event.transaction is txn
    assert event.data == txn.request.serialise()


def test_make_cancel_copies_the_identifying_fields() -> None:
    req = request("INVITE", extra=["Route: <sip:p1.example.com;lr>", "Require: 100rel"])
    cancel = make_cancel(req)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(req.uri)
    assert cancel.headers.get_all("Via") == [req.headers.get("Via")]
    for name in ("To", "From", "Call-ID", "Route"):
        assert cancel.headers.get_all(name) == req.headers.get_all(name)
    assert cancel.headers.get("CSeq") == "314159 CANCEL"
    assert "Require" not in cancel.headers  # §9.1: no Require / Proxy-Require
    # Same branch, different method: a separate client transaction.
    txn = ClientTransaction(cancel, DEST, reliable=False)
    assert txn.key == (txn.branch, "CANCEL")
    with pytest.raises(LocalProtocolError):
        make_cancel(request("ACK"))


def test_make_ack_round_trips_through_the_parser() -> None:
    req = request("INVITE")
    ack = make_ack(req, response(req, 404))
    assert reparse(ack.serialise()).serialise() == ack.serialise()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"method": "ACK"}, "ACK has no client transaction"),
        ({"branch": "1234"}, "z9hG4bK"),
        ({"branch": None}, "z9hG4bK"),
        ({"cseq_method": "OPTIONS"}, "CSeq method"),
    ],
)
def test_client_api_misuse(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(LocalProtocolError, match=reason):
        ClientTransaction(request(**kwargs), DEST, reliable=False)  # type: ignore[arg-type]


def test_start_twice_is_misuse() -> None:
    txn = ClientTransaction(request("OPTIONS"), DEST, reliable=False)
    txn.start(0.0)
    with pytest.raises(LocalProtocolError):
        txn.start(0.0)


def test_timers_scale_with_t1() -> None:
    config = TimerConfig(T1=0.1, T2=0.4)
    txn = ClientTransaction(request("OPTIONS"), DEST, reliable=False, config=config)
    txn.start(0.0)
    log = run_until_terminated(txn)
    assert log[-1][0] == pytest.approx(6.4)  # F = 64*T1
    assert [round(t, 6) for t, k in log[:4]] == [0.1, 0.3, 0.7, 1.1]


def test_late_timer_call_fires_in_order_without_bursting() -> None:
    txn = ClientTransaction(request("INVITE"), DEST, reliable=False)
    txn.start(0.0)
    # The adapter was asleep for 40 s: one retransmission then the timeout,
    # not a burst of six stale retransmissions.
    events = txn.handle_timer(40.0)
    assert kinds(events) == ["Transmit", "TransactionTimeout", "TransactionTerminated"]
