"""The transaction layer: matching, CANCEL and ACK routing, limits, timers, and a pair test."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.headers import Headers
from conclave.sip.message import Request, Response, make_response
from conclave.sip.transaction import (
    AckReceived,
    CancelReceived,
    Event,
    Overloaded,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    Timer,
    TransactionLayer,
    TransactionLimitError,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
    make_cancel,
)
from conclave.sip.uri import parse_uri

from .test_transaction_support import (
    DEST,
    SOURCE,
    Clock,
    first_line,
    kinds,
    reparse,
    request,
    response,
    sent,
)


def new_server(events: Sequence[Event]) -> ServerTransaction:
    (received,) = [e for e in events if isinstance(e, RequestReceived | CancelReceived)]
    return received.transaction


# -- server-side matching ---------------------------------------------------------------


def test_duplicate_requests_are_absorbed() -> None:
    layer = TransactionLayer()
    events = layer.receive_request(request("OPTIONS"), SOURCE, 0.0)
    assert kinds(events) == ["RequestReceived"]
    assert layer.receive_request(request("OPTIONS"), SOURCE, 0.1) == []
    assert layer.server_count == 1


def test_server_resends_final_on_request_retransmission() -> None:
    layer = TransactionLayer()
    txn = new_server(layer.receive_request(request("INVITE"), SOURCE, 0.0))
    busy = response(txn.request, 486)
    assert sent(layer.send_response(txn, busy, 0.05)) == [busy.serialise()]
    again = layer.receive_request(request("INVITE"), SOURCE, 0.3)
    assert again == [Transmit(busy.serialise(), SOURCE, txn)]


def test_same_branch_different_sent_by_or_method_is_a_new_transaction() -> None:
    layer = TransactionLayer()
    layer.receive_request(request("OPTIONS"), SOURCE, 0.0)
    assert kinds(
        layer.receive_request(request("OPTIONS", sent_by="other.example.com"), SOURCE, 0)
    ) == ["RequestReceived"]
    assert kinds(layer.receive_request(request("INFO"), SOURCE, 0.0)) == ["RequestReceived"]
    assert layer.server_count == 3


def test_reliability_is_inferred_from_the_via_transport() -> None:
    layer = TransactionLayer()
    txn = new_server(layer.receive_request(request("OPTIONS", transport="TCP"), SOURCE, 0.0))
    assert txn.reliable
    events = layer.send_response(txn, response(txn.request, 200), 0.0)
    assert kinds(events) == ["Transmit", "TransactionTerminated"]  # J = 0
    assert layer.server_count == 0
    txn = new_server(layer.receive_request(request("OPTIONS"), SOURCE, 0.0, reliable=True))
    assert txn.reliable


def test_request_without_via_is_a_remote_error_and_changes_nothing() -> None:
    layer = TransactionLayer()
    bare = Request(
        "OPTIONS",
        parse_uri("sip:bob@example.com"),
        Headers([("CSeq", "1 OPTIONS"), ("Call-ID", "x")]),
    )
    with pytest.raises(RemoteProtocolError):
        layer.receive_request(bare, SOURCE, 0.0)
    assert len(layer) == 0


# -- CANCEL (§9.2) ----------------------------------------------------------------------


def test_cancel_matching_a_pending_invite() -> None:
    layer = TransactionLayer()
    invite_txn = new_server(layer.receive_request(request("INVITE"), SOURCE, 0.0))
    layer.send_response(invite_txn, response(invite_txn.request, 180), 0.05)
    cancel = make_cancel(invite_txn.request)
    events = layer.receive_request(cancel, SOURCE, 1.0)
    assert kinds(events) == ["CancelReceived"]
    event = events[0]
    assert isinstance(event, CancelReceived)
    assert event.invite is invite_txn
    assert event.transaction is not invite_txn and event.transaction.method == "CANCEL"
    # The TU answers the CANCEL 200 and the INVITE 487 (§9.2).
    ok = response(cancel, 200)
    layer.send_response(event.transaction, ok, 1.0)
    terminated = response(invite_txn.request, 487)
    layer.send_response(invite_txn, terminated, 1.0)
    # A retransmitted CANCEL gets its 200 again; it does not reach the TU twice.
    assert sent(layer.receive_request(cancel, SOURCE, 1.2)) == [ok.serialise()]
    # The ACK for the 487 carries the INVITE's branch and is absorbed.
    ack = request("ACK", to_tag="srv1")
    assert layer.receive_request(ack, SOURCE, 1.5) == []
    assert invite_txn.state is State.CONFIRMED


def test_cancel_matching_nothing_is_answered_481_by_the_tu() -> None:
    layer = TransactionLayer()
    cancel = make_cancel(request("INVITE", branch="z9hG4bKnobody"))
    events = layer.receive_request(cancel, SOURCE, 0.0)
    assert kinds(events) == ["CancelReceived"]
    event = events[0]
    assert isinstance(event, CancelReceived) and event.invite is None
    reply = layer.send_response(event.transaction, response(cancel, 481), 0.0)
    assert [first_line(d) for d in sent(reply)] == ["SIP/2.0 481 Call/Transaction Does Not Exist"]


def test_cancel_does_not_match_an_invite_from_another_sent_by() -> None:
    layer = TransactionLayer()
    layer.receive_request(request("INVITE"), SOURCE, 0.0)
    cancel = make_cancel(request("INVITE", sent_by="evil.example.net"))
    (event,) = layer.receive_request(cancel, SOURCE, 0.1)
    assert isinstance(event, CancelReceived) and event.invite is None


# -- ACK routing ------------------------------------------------------------------------------


def test_ack_for_2xx_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    txn = new_server(layer.receive_request(request("INVITE"), SOURCE, 0.0))
    layer.send_response(txn, response(txn.request, 200), 0.1)
    ack = request("ACK", branch="z9hG4bKack2xx", to_tag="srv1")  # a new branch (§8.1.1.7)
    events = layer.receive_request(ack, SOURCE, 0.2)
    assert events == [AckReceived(ack, SOURCE, None)]
    # After Timer L the transaction is gone, and the ACK still reaches the TU.
    layer.handle_timers(40.0)
    assert layer.server_count == 0
    assert kinds(layer.receive_request(ack, SOURCE, 41.0)) == ["AckReceived"]


def test_ack_with_the_invite_branch_in_accepted_reaches_the_tu_with_its_transaction() -> None:
    layer = TransactionLayer()
    txn = new_server(layer.receive_request(request("INVITE"), SOURCE, 0.0))
    layer.send_response(txn, response(txn.request, 200), 0.1)
    (event,) = layer.receive_request(request("ACK", to_tag="srv1"), SOURCE, 0.2)
    assert isinstance(event, AckReceived) and event.transaction is txn


# -- RFC 2543 fallback (§17.2.3) --------------------------------------------------------------


def test_rfc2543_requests_match_without_a_cookie() -> None:
    layer = TransactionLayer()
    old = request("INVITE", branch=None, from_tag=None)
    txn = new_server(layer.receive_request(old, SOURCE, 0.0))
    busy = response(old, 486, to_tag="t486")
    layer.send_response(txn, busy, 0.0)
    # Retransmission: same Request-URI, tags, Call-ID, CSeq and Via.
    again = request("INVITE", branch=None, from_tag=None)
    assert sent(layer.receive_request(again, SOURCE, 0.4)) == [busy.serialise()]
    # A different Call-ID is a different transaction.
    other = request("INVITE", branch=None, from_tag=None, call_id="other@x")
    assert kinds(layer.receive_request(other, SOURCE, 0.4)) == ["RequestReceived"]
    # An ACK whose To tag is not the one we sent matches nothing.
    wrong = request("ACK", branch=None, from_tag=None, to_tag="nope")
    assert kinds(layer.receive_request(wrong, SOURCE, 0.5)) == ["AckReceived"]
    assert txn.state is State.COMPLETED
    # The ACK carrying our To tag matches, though the INVITE had no To tag.
    ack = request("ACK", branch=None, from_tag=None, to_tag="t486")
    assert layer.receive_request(ack, SOURCE, 0.6) == []
    assert txn.state is State.CONFIRMED


def test_rfc2543_branch_without_cookie_uses_fallback_and_cancel_finds_invite() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="1")
    invite_txn = new_server(layer.receive_request(invite, SOURCE, 0.0))
    assert invite_txn.key[0] == "2543"
    (event,) = layer.receive_request(make_cancel(invite), SOURCE, 0.1)
    assert isinstance(event, CancelReceived) and event.invite is invite_txn


def test_terminated_rfc2543_invite_leaves_no_ack_index_behind() -> None:
    layer = TransactionLayer()
    txn = new_server(layer.receive_request(request("INVITE", branch=None), SOURCE, 0.0))
    layer.send_response(txn, response(txn.request, 486, to_tag="x"), 0.0)
    layer.handle_timers(100.0)
    assert len(layer) == 0
    ack = request("ACK", branch=None, to_tag="x")
    assert kinds(layer.receive_request(ack, SOURCE, 100.0)) == ["AckReceived"]


# -- client side --------------------------------------------------------------------------


def test_client_response_matching_and_strays() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    txn, events = layer.send_request(req, DEST, 0.0, reliable=False)
    assert events == [Transmit(req.serialise(), DEST, txn)]
    stray = response(request("OPTIONS", branch="z9hG4bKunknown"), 200)
    assert layer.receive_response(stray, DEST, 0.1) == [StrayResponse(stray, DEST)]
    ok = response(req, 200)
    assert layer.receive_response(ok, DEST, 0.2) == [ResponseReceived(txn, ok)]
    assert layer.receive_response(ok, DEST, 0.3) == []  # absorbed in Completed


def test_cancel_and_invite_share_a_branch_but_not_a_transaction() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    invite_txn, _ = layer.send_request(invite, DEST, 0.0, reliable=False)
    layer.receive_response(response(invite, 180), DEST, 0.1)
    cancel_txn, events = layer.send_request(make_cancel(invite), DEST, 0.2, reliable=False)
    assert kinds(events) == ["Transmit"] and layer.client_count == 2
    ok = response(cancel_txn.request, 200)
    assert layer.receive_response(ok, DEST, 0.3) == [ResponseReceived(cancel_txn, ok)]
    assert invite_txn.state is State.PROCEEDING


def test_late_2xx_to_a_completed_invite_is_reported_as_stray() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    layer.send_request(invite, DEST, 0.0, reliable=False)
    layer.receive_response(response(invite, 486), DEST, 0.1)
    late_ok = response(invite, 200, to_tag="fork2")
    assert layer.receive_response(late_ok, DEST, 0.2) == [StrayResponse(late_ok, DEST)]


def test_send_request_misuse() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), DEST, 0.0, reliable=False)
    with pytest.raises(LocalProtocolError, match="already in use"):
        layer.send_request(request("OPTIONS"), DEST, 0.0, reliable=False)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("ACK"), DEST, 0.0, reliable=False)
    assert layer.client_count == 1


def test_send_stateless_and_foreign_transactions() -> None:
    layer = TransactionLayer()
    ack = request("ACK", to_tag="srv1", branch="z9hG4bKack")
    assert layer.send_stateless(ack, DEST) == [Transmit(ack.serialise(), DEST, None)]
    foreign = ServerTransaction(request("OPTIONS"), SOURCE, reliable=False)
    foreign.start(0.0)
    with pytest.raises(LocalProtocolError, match="not live"):
        layer.send_response(foreign, response(foreign.request, 200), 0.0)
    assert layer.transport_error(foreign, 0.0) == []


def test_transport_error_through_the_layer_removes_the_transaction() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request("MESSAGE"), DEST, 0.0, reliable=True)
    assert kinds(layer.transport_error(txn, 0.1)) == ["TransportFailed", "TransactionTerminated"]
    assert len(layer) == 0 and layer.next_deadline() is None


# -- limits ---------------------------------------------------------------------------------


def test_full_table_answers_503_with_retry_after() -> None:
    layer = TransactionLayer(max_transactions=2, retry_after=7)
    layer.receive_request(request("OPTIONS", branch="z9hG4bK1"), SOURCE, 0.0)
    layer.receive_request(request("OPTIONS", branch="z9hG4bK2"), SOURCE, 0.0)
    third = request("OPTIONS", branch="z9hG4bK3")
    events = layer.receive_request(third, SOURCE, 0.0)
    assert kinds(events) == ["Transmit", "Overloaded"]
    assert events[1] == Overloaded(third, SOURCE)
    reply = reparse(sent(events)[0])
    assert isinstance(reply, Response) and reply.status == 503
    assert reply.headers.get("Retry-After") == "7"
    assert ";tag=" in (reply.headers.get("To") or "")
    # Stateless, but the To tag is the same for a retransmission (§8.2.7).
    assert layer.receive_request(third, SOURCE, 0.5)[0] == events[0]
    assert layer.server_count == 2
    # Retransmissions of existing transactions and ACKs are still handled.
    assert layer.receive_request(request("OPTIONS", branch="z9hG4bK1"), SOURCE, 0.6) == []
    assert kinds(layer.receive_request(request("ACK"), SOURCE, 0.6)) == ["AckReceived"]


def test_room_frees_up_when_transactions_end() -> None:
    # An INVITE answered 486 over UDP waits for its ACK (Timer H): still live.
    layer = TransactionLayer(max_transactions=1)
    txn = new_server(layer.receive_request(request("INVITE", branch="z9hG4bK1"), SOURCE, 0.0))
    layer.send_response(txn, response(txn.request, 486), 0.0)
    blocked = layer.receive_request(request("OPTIONS", branch="z9hG4bK2"), SOURCE, 1.0)
    assert kinds(blocked) == ["Transmit", "Overloaded"]
    assert "TransactionTerminated" in kinds(layer.handle_timers(32.0))
    admitted = layer.receive_request(request("OPTIONS", branch="z9hG4bK2"), SOURCE, 33.0)
    assert kinds(admitted) == ["RequestReceived"]


def test_an_answered_udp_request_holds_no_live_slot() -> None:
    # Issue 14: Timer J keeps an answered non-INVITE UDP transaction for 32 s;
    # as a live transaction that capped UDP at MAX_TRANSACTIONS / 32 s.
    layer = TransactionLayer(max_transactions=1)
    first = request("MESSAGE", branch="z9hG4bK1")
    txn = new_server(layer.receive_request(first, SOURCE, 0.0))
    events = layer.send_response(txn, response(first, 200), 0.0)
    assert kinds(events) == ["Transmit", "TransactionTerminated"]  # the TU is done with it
    assert layer.server_count == 0 and layer.completed_count == 1
    # Its retransmission gets the very same bytes again, from the record.
    again = layer.receive_request(first, SOURCE, 1.0)
    assert again == [Transmit(sent(events)[0], SOURCE, None)]
    # A new request finds room at once.
    other = request("MESSAGE", branch="z9hG4bK2")
    events = layer.receive_request(other, SOURCE, 1.0)
    assert kinds(events) == ["RequestReceived"]
    layer.send_response(new_server(events), response(other, 200), 1.0)
    # After Timer J the record is gone: a late copy is a new request.
    layer.handle_timers(33.0)
    assert layer.completed_count == 0 and layer.completed_bytes == 0
    assert kinds(layer.receive_request(first, SOURCE, 33.0)) == ["RequestReceived"]


def test_answered_requests_are_bounded_by_memory() -> None:
    layer = TransactionLayer(max_completed_bytes=3_000)
    for n in range(10):
        req = request("MESSAGE", branch=f"z9hG4bKm{n}")
        layer.send_response(
            new_server(layer.receive_request(req, SOURCE, 0.0)), response(req, 200), 0.0
        )
    assert 0 < layer.completed_bytes <= 3_000
    assert layer.completed_evicted == 10 - layer.completed_count
    # The newest are kept; the oldest retransmission is a new request again.
    newest = request("MESSAGE", branch="z9hG4bKm9")
    assert kinds(layer.receive_request(newest, SOURCE, 1.0)) == ["Transmit"]
    oldest = request("MESSAGE", branch="z9hG4bKm0")
    assert kinds(layer.receive_request(oldest, SOURCE, 1.0)) == ["RequestReceived"]


def test_over_a_connection_an_answered_request_ends_at_once() -> None:
    layer = TransactionLayer()
    req = request("MESSAGE", transport="TCP")
    txn = new_server(layer.receive_request(req, SOURCE, 0.0, reliable=True))
    events = layer.send_response(txn, response(req, 200), 0.0)
    assert kinds(events) == ["Transmit", "TransactionTerminated"]  # Timer J is 0 (§17.2.2)
    assert layer.completed_count == 0 and len(layer) == 0


def test_client_limit_raises() -> None:
    layer = TransactionLayer(max_transactions=1)
    layer.send_request(request("OPTIONS", branch="z9hG4bK1"), DEST, 0.0, reliable=False)
    with pytest.raises(TransactionLimitError):
        layer.send_request(request("OPTIONS", branch="z9hG4bK2"), DEST, 0.0, reliable=False)


# -- timer multiplexing -------------------------------------------------------------------


def test_one_deadline_for_many_transactions() -> None:
    layer = TransactionLayer()
    clock = Clock(0.0)
    assert layer.next_deadline() is None
    for i in range(50):
        layer.send_request(request("OPTIONS", branch=f"z9hG4bK{i}"), DEST, i * 0.01, reliable=False)
    assert layer.next_deadline() == 0.5
    timeouts: list[Event] = []
    while (deadline := layer.next_deadline()) is not None:
        assert deadline >= clock.now
        clock.now = deadline
        events = layer.handle_timers(clock.now)
        assert events, "a due deadline must produce something"
        timeouts += [e for e in events if isinstance(e, TransactionTimeout)]
    assert len(timeouts) == 50 and len(layer) == 0
    assert all(isinstance(e, TransactionTimeout) and e.timer is Timer.F for e in timeouts)


def test_rescheduling_many_times_keeps_deadlines_exact() -> None:
    layer = TransactionLayer()
    txns = []
    for i in range(20):
        events = layer.receive_request(request("INVITE", branch=f"z9hG4bK{i}"), SOURCE, 0.0)
        txns.append(new_server(events))
    now = 0.0
    for round_ in range(30):
        now += 0.01
        for txn in txns:
            if txn.state is State.PROCEEDING:
                layer.send_response(txn, response(txn.request, 183), now)
        expected = min((d for t in txns if (d := t.next_deadline()) is not None), default=None)
        assert layer.next_deadline() == expected, round_
    for txn in txns:
        layer.send_response(txn, response(txn.request, 486), now)
    assert layer.next_deadline() == pytest.approx(now + 0.5)
    assert kinds(layer.handle_timers(now + 0.5)) == ["Transmit"] * 20


# -- a pair test: client layer <-> lossy in-memory network <-> server layer ------------


class LossyNetwork:
    """Delivers Transmit events between two layers, dropping chosen datagrams."""

    def __init__(self, client: TransactionLayer, server: TransactionLayer, drop: set[int]):
        self.client, self.server, self.drop = client, server, drop
        self.count = 0
        self.lines: list[str] = []
        self.tu_events: list[Event] = []

    def deliver(self, events: Sequence[Event], now: float) -> None:
        for event in events:
            if not isinstance(event, Transmit):
                self.tu_events.append(event)
                continue
            self.count += 1
            if self.count in self.drop:
                continue
            msg = reparse(event.data)
            self.lines.append(first_line(event.data))
            if isinstance(msg, Request):
                self.deliver(self.server.receive_request(msg, "client", now), now)
            else:
                self.deliver(self.client.receive_response(msg, "server", now), now)

    def run_timers(self, until: float) -> None:
        while True:
            deadlines = [d for d in (self.client.next_deadline(), self.server.next_deadline()) if d]
            if not deadlines or min(deadlines) > until:
                return
            now = min(deadlines)
            self.deliver(self.client.handle_timers(now), now)
            self.deliver(self.server.handle_timers(now), now)


def test_pair_invite_rejected_over_lossy_udp() -> None:
    client, server = TransactionLayer(), TransactionLayer()
    # Drop the first INVITE and the first 486.
    net = LossyNetwork(client, server, drop={1, 4})
    invite = request("INVITE")
    txn, events = client.send_request(invite, "server", 0.0, reliable=False)
    net.deliver(events, 0.0)
    net.run_timers(0.5)  # Timer A retransmits; the server gets it and sends 100 at 0.7
    net.run_timers(0.7)
    (received,) = [e for e in net.tu_events if isinstance(e, RequestReceived)]
    net.deliver(server.send_response(received.transaction, response(invite, 486), 1.0), 1.0)
    net.run_timers(60.0)
    assert net.lines == [
        "INVITE sip:bob@example.com SIP/2.0",  # retransmission (the first was lost)
        "SIP/2.0 100 Trying",
        "SIP/2.0 486 Busy Here",  # Timer G retransmission (the first was lost)
        "ACK sip:bob@example.com SIP/2.0",
    ]
    assert [
        type(e).__name__ for e in net.tu_events if not isinstance(e, TransactionTerminated)
    ] == [
        "RequestReceived",
        "ResponseReceived",
        "ResponseReceived",
    ]
    assert txn.terminated and received.transaction.terminated
    assert len(client) == 0 and len(server) == 0


def test_pair_non_invite_over_reliable_transport_sends_each_message_once() -> None:
    client, server = TransactionLayer(), TransactionLayer()
    net = LossyNetwork(client, server, drop=set())
    req = request("MESSAGE", transport="TCP")
    _, events = client.send_request(req, "server", 0.0, reliable=True)
    net.deliver(events, 0.0)
    (received,) = [e for e in net.tu_events if isinstance(e, RequestReceived)]
    ok = make_response(received.request, 200, to_tag="m1")
    net.deliver(server.send_response(received.transaction, ok, 0.1), 0.1)
    net.run_timers(100.0)
    assert net.lines == ["MESSAGE sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK"]
    assert len(client) == 0 and len(server) == 0


def test_a_response_over_a_connection_must_come_back_on_it() -> None:
    layer = TransactionLayer()
    conn, other = ("tls", ("192.0.2.20", 5061), 1), ("tls", ("192.0.2.66", 5061), 2)
    req = request("INVITE", transport="TLS")
    txn, _ = layer.send_request(req, conn, 0.0, reliable=True)
    forged = response(req, 180)
    assert layer.receive_response(forged, other, 0.1) == [StrayResponse(forged, other)]
    assert txn.state is State.CALLING
    assert layer.receive_response(forged, conn, 0.2) == [ResponseReceived(txn, forged)]


def test_a_challenge_is_sent_once_and_keeps_no_state() -> None:
    # RFC 3261 §26.3.2.4: over UDP, no Timer G retransmissions toward a
    # source that may be forged, and no transaction waiting for its ACK.
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = new_server(layer.receive_request(invite, SOURCE, 0.0))
    challenge = make_response(invite, 407, to_tag="t")
    events = layer.send_final_once(txn, challenge, 0.1)
    assert kinds(events) == ["Transmit", "TransactionTerminated"]
    assert layer.server_count == 0 and layer.next_deadline() is None
    assert layer.handle_timers(100.0) == []
    # A retransmission of the INVITE is a new request, challenged afresh.
    assert kinds(layer.receive_request(invite, SOURCE, 0.6)) == ["RequestReceived"]
    with pytest.raises(LocalProtocolError):
        layer.send_final_once(txn, make_response(invite, 100), 0.7)
