"""Server transactions (RFC 3261 §17.2, RFC 6026) driven by a stepped clock."""

from __future__ import annotations

import pytest

from conclave.sip.errors import LocalProtocolError
from conclave.sip.message import Response, make_response
from conclave.sip.transaction import (
    AckReceived,
    ServerTransaction,
    State,
    Timer,
    TimerConfig,
    TransactionTimeout,
)

from .test_transaction_support import (
    SOURCE,
    first_line,
    kinds,
    reparse,
    request,
    response,
    sent,
)


def make_server(
    method: str = "INVITE", *, reliable: bool = False, config: TimerConfig | None = None
) -> ServerTransaction:
    txn = ServerTransaction(request(method), SOURCE, reliable=reliable, config=config)
    txn.start(0.0)
    return txn


# -- INVITE server: 100 Trying ---------------------------------------------------------


def test_invite_server_sends_100_trying_after_200ms_of_silence() -> None:
    txn = ServerTransaction(request("INVITE", extra=["Timestamp: 54"]), SOURCE, reliable=False)
    assert txn.start(0.0) == []
    assert txn.next_deadline() == pytest.approx(0.2)
    events = txn.handle_timer(0.2)
    assert kinds(events) == ["Transmit"]
    trying = reparse(sent(events)[0])
    assert isinstance(trying, Response) and trying.status == 100
    assert "tag=" not in (trying.headers.get("To") or "")  # 100 needs no tag (§8.2.6.2)
    assert trying.headers.get("Timestamp") == "54"  # echoed (§8.2.6.1)
    assert txn.next_deadline() is None
    # A retransmitted INVITE gets the 100 again.
    assert sent(txn.receive_request(request("INVITE"), SOURCE, 0.6)) == sent(events)


def test_no_100_when_the_tu_answers_in_time() -> None:
    txn = make_server()
    ringing = response(txn.request, 180)
    assert kinds(txn.send_response(ringing, 0.1)) == ["Transmit"]
    assert txn.next_deadline() is None  # the 100 Trying timer was stopped
    assert sent(txn.receive_request(request("INVITE"), SOURCE, 0.5)) == [ringing.serialise()]


def test_trying_delay_zero_sends_100_immediately() -> None:
    txn = ServerTransaction(
        request("INVITE"), SOURCE, reliable=True, config=TimerConfig(trying_delay=0)
    )
    events = txn.start(0.0)
    assert [first_line(d) for d in sent(events)] == ["SIP/2.0 100 Trying"]
    assert txn.next_deadline() is None


def test_invite_retransmission_before_any_response_is_absorbed() -> None:
    txn = make_server()
    assert txn.receive_request(request("INVITE"), SOURCE, 0.1) == []
    assert txn.state is State.PROCEEDING


# -- INVITE server: non-2xx final, Timers G, H, I ------------------------------------------


def test_timer_g_retransmits_final_until_timer_h() -> None:
    txn = make_server()
    busy = response(txn.request, 486)
    assert kinds(txn.send_response(busy, 0.0)) == ["Transmit"]
    assert txn.state is State.COMPLETED
    times: list[float] = []
    while (deadline := txn.next_deadline()) is not None:
        events = txn.handle_timer(deadline)
        if kinds(events) == ["Transmit"]:
            assert sent(events) == [busy.serialise()]
            times.append(deadline)
        else:
            last = events
    # G: T1 doubling up to T2 (§17.2.1); H = 64*T1.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert kinds(last) == ["TransactionTimeout", "TransactionTerminated"]
    timeout = last[0]
    assert isinstance(timeout, TransactionTimeout) and timeout.timer is Timer.H


def test_ack_moves_to_confirmed_then_timer_i() -> None:
    txn = make_server()
    busy = response(txn.request, 486)
    txn.send_response(busy, 0.0)
    assert sent(txn.receive_request(request("INVITE"), SOURCE, 0.3)) == [busy.serialise()]
    ack = request("ACK", to_tag="srv1")
    assert txn.receive_request(ack, SOURCE, 1.0) == []  # absorbed: not for the TU
    assert txn.state is State.CONFIRMED
    assert txn.next_deadline() == pytest.approx(6.0)  # I = T4; G and H stopped
    assert txn.receive_request(ack, SOURCE, 2.0) == []
    assert txn.receive_request(request("INVITE"), SOURCE, 2.5) == []
    assert kinds(txn.handle_timer(6.0)) == ["TransactionTerminated"]


def test_reliable_invite_server_does_not_retransmit_and_i_is_zero() -> None:
    txn = make_server(reliable=True)
    txn.send_response(response(txn.request, 404), 0.0)
    assert txn.next_deadline() == 32.0  # H only
    events = txn.receive_request(request("ACK", to_tag="srv1"), SOURCE, 1.0)
    assert kinds(events) == ["TransactionTerminated"]


def test_ack_in_proceeding_is_ignored() -> None:
    txn = make_server()
    assert txn.receive_request(request("ACK"), SOURCE, 0.1) == []
    assert txn.state is State.PROCEEDING


# -- INVITE server: 2xx and RFC 6026 Accepted ---------------------------------------------


def test_2xx_moves_to_accepted_and_the_tu_owns_retransmission() -> None:
    txn = make_server()
    ok = response(txn.request, 200)
    assert kinds(txn.send_response(ok, 0.0)) == ["Transmit"]
    assert txn.state is State.ACCEPTED
    assert txn.next_deadline() == 32.0  # Timer L only: no Timer G for 2xx
    assert txn.receive_request(request("INVITE"), SOURCE, 0.5) == []  # absorbed
    # The UAS core retransmits its 2xx through the transaction (§13.3.1.4).
    assert sent(txn.send_response(ok, 0.5)) == [ok.serialise()]
    ack = request("ACK", to_tag="srv1", branch="z9hG4bKnewack")
    events = txn.receive_request(ack, SOURCE, 0.7)
    assert kinds(events) == ["AckReceived"]
    assert isinstance(events[0], AckReceived) and events[0].transaction is txn
    with pytest.raises(LocalProtocolError):
        txn.send_response(response(txn.request, 180), 1.0)
    with pytest.raises(LocalProtocolError):
        txn.send_response(response(txn.request, 486), 1.0)
    assert txn.state is State.ACCEPTED
    assert kinds(txn.handle_timer(32.0)) == ["TransactionTerminated"]


# -- non-INVITE server ---------------------------------------------------------------


def test_non_invite_trying_discards_retransmissions() -> None:
    txn = make_server("OPTIONS")
    assert txn.next_deadline() is None  # no 100 Trying timer for non-INVITE
    assert txn.receive_request(request("OPTIONS"), SOURCE, 0.5) == []


def test_non_invite_proceeding_and_completed_resend_last_response() -> None:
    txn = make_server("SUBSCRIBE")
    trying = make_response(txn.request, 100)
    txn.send_response(trying, 0.0)
    assert txn.state is State.PROCEEDING
    assert sent(txn.receive_request(request("SUBSCRIBE"), SOURCE, 0.5)) == [trying.serialise()]
    ok = response(txn.request, 202)
    txn.send_response(ok, 1.0)
    assert txn.state is State.COMPLETED
    assert sent(txn.receive_request(request("SUBSCRIBE"), SOURCE, 2.0)) == [ok.serialise()]
    assert txn.next_deadline() == 33.0  # Timer J = 64*T1
    assert kinds(txn.handle_timer(33.0)) == ["TransactionTerminated"]


def test_non_invite_reliable_j_is_zero() -> None:
    txn = make_server("OPTIONS", reliable=True)
    events = txn.send_response(response(txn.request, 200), 0.0)
    assert kinds(events) == ["Transmit", "TransactionTerminated"]


@pytest.mark.parametrize("second", [200, 486, 180])
def test_second_response_after_final_is_misuse(second: int) -> None:
    txn = make_server("OPTIONS")
    txn.send_response(response(txn.request, 200), 0.0)
    with pytest.raises(LocalProtocolError):
        txn.send_response(response(txn.request, second), 0.1)
    assert txn.state is State.COMPLETED


def test_response_after_terminated_is_misuse() -> None:
    txn = make_server("OPTIONS", reliable=True)
    txn.send_response(response(txn.request, 200), 0.0)
    with pytest.raises(LocalProtocolError):
        txn.send_response(response(txn.request, 200), 0.1)


def test_response_for_another_method_is_misuse() -> None:
    txn = make_server("OPTIONS")
    wrong = response(request("INFO"), 200)
    with pytest.raises(LocalProtocolError, match="does not answer"):
        txn.send_response(wrong, 0.0)


@pytest.mark.parametrize("status", [99, 700])
def test_status_out_of_range_is_misuse(status: int) -> None:
    txn = make_server("OPTIONS")
    bad = response(txn.request, 200)
    bad.status = status
    with pytest.raises(LocalProtocolError):
        txn.send_response(bad, 0.0)


def test_ack_cannot_create_a_server_transaction() -> None:
    with pytest.raises(LocalProtocolError):
        ServerTransaction(request("ACK"), SOURCE, reliable=False)


def test_transport_error_in_completed_terminates() -> None:
    txn = make_server()
    txn.send_response(response(txn.request, 500), 0.0)
    assert kinds(txn.transport_error(0.1)) == ["TransportFailed", "TransactionTerminated"]


def test_transport_error_in_accepted_is_reported_but_keeps_state() -> None:
    txn = make_server()
    txn.send_response(response(txn.request, 200), 0.0)
    assert kinds(txn.transport_error(0.1)) == ["TransportFailed"]
    assert txn.state is State.ACCEPTED


def test_timer_config_validation() -> None:
    with pytest.raises(LocalProtocolError):
        TimerConfig(T1=0)
    with pytest.raises(LocalProtocolError):
        TimerConfig(T1=5, T2=4)
    with pytest.raises(LocalProtocolError):
        TimerConfig(trying_delay=-1)
    config = TimerConfig()
    assert config.timeout == 32.0
    assert config.timer_d(False) == 32.0 and config.timer_d(True) == 0.0
    assert TimerConfig(T1=0.1, T2=0.4).timer_d(False) == 32.0  # "at least 32 s"
    assert (config.timer_i(False), config.timer_j(False), config.timer_k(False)) == (5, 32, 5)
    assert (config.timer_i(True), config.timer_j(True), config.timer_k(True)) == (0, 0, 0)
