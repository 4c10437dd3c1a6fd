"""Random (input, time advance) sequences against every machine and the layer.

Invariants: nothing but LocalProtocolError is ever raised (and only for TU
misuse, leaving the state unchanged); Terminated is final; after each call
no deadline lies at or before ``now``; the layer's single deadline is the
earliest of its live transactions'.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conclave.sip.errors import LocalProtocolError
from conclave.sip.message import Response
from conclave.sip.transaction import (
    CancelReceived,
    ClientTransaction,
    Event,
    RequestReceived,
    ServerTransaction,
    State,
    TimerConfig,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    make_cancel,
)

from .test_transaction_support import DEST, SOURCE, request, response

STATUSES = [100, 180, 183, 200, 202, 302, 404, 486, 503, 603]
# Mostly small steps, so that machines live long enough to visit every state,
# with the occasional jump past a 64*T1 timeout.
ADVANCE = st.one_of(
    st.sampled_from([0.0, 0.0, 0.1, 0.2, 0.5, 1.0]),
    st.floats(min_value=0.0, max_value=6.0, allow_nan=False),
    st.sampled_from([4.0, 5.0, 32.0, 40.0]),
)
CONFIGS = st.sampled_from([TimerConfig(), TimerConfig(trying_delay=0), TimerConfig(T1=0.1)])

# Transport errors end a machine at once, so they are drawn rarely.
client_ops = st.lists(
    st.tuples(
        st.tuples(
            st.sampled_from(["response"] * 6 + ["timer"] * 2 + ["transport_error"]),
            st.sampled_from(STATUSES),
        ),
        ADVANCE,
    ),
    max_size=25,
)

server_ops = st.lists(
    st.tuples(
        st.tuples(
            st.sampled_from(
                ["tu"] * 4 + ["retransmit"] * 2 + ["ack"] * 2 + ["timer", "transport_error"]
            ),
            st.sampled_from(STATUSES),
        ),
        ADVANCE,
    ),
    max_size=25,
)


def check_after(txn: Transaction, now: float, was_terminated: bool) -> None:
    if was_terminated:
        assert txn.state is State.TERMINATED
    deadline = txn.next_deadline()
    assert deadline is None or deadline > now
    if txn.terminated:
        assert deadline is None


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    reliable=st.booleans(),
    config=CONFIGS,
    ops=client_ops,
)
def test_client_machines_never_misbehave(
    method: str, reliable: bool, config: TimerConfig, ops: list[tuple[tuple[str, int], float]]
) -> None:
    req = request(method)
    txn = ClientTransaction(req, DEST, reliable=reliable, config=config)
    now = 0.0
    txn.start(now)
    check_after(txn, now, False)
    for (op, status), advance in ops:
        now += advance
        was = txn.terminated
        txn.handle_timer(now)
        check_after(txn, now, was)
        was = txn.terminated
        if op == "response":
            txn.receive_response(response(req, status), now)
        elif op == "timer":
            txn.handle_timer(now)
        else:
            txn.transport_error(now)
        check_after(txn, now, was)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "SUBSCRIBE"]),
    reliable=st.booleans(),
    config=CONFIGS,
    ops=server_ops,
)
def test_server_machines_never_misbehave(
    method: str, reliable: bool, config: TimerConfig, ops: list[tuple[tuple[str, int], float]]
) -> None:
    req = request(method)
    txn = ServerTransaction(req, SOURCE, reliable=reliable, config=config)
    now = 0.0
    txn.start(now)
    check_after(txn, now, False)
    for (op, status), advance in ops:
        now += advance
        was = txn.terminated
        txn.handle_timer(now)
        check_after(txn, now, was)
        was = txn.terminated
        if op == "tu":
            before = (txn.state, txn.deadlines(), txn.last_response)
            try:
                txn.send_response(response(req, status), now)
            except LocalProtocolError:
                assert (txn.state, txn.deadlines(), txn.last_response) == before
        elif op == "retransmit":
            txn.receive_request(request(method), SOURCE, now)
        elif op == "ack":
            txn.receive_request(request("ACK", to_tag="srv1"), SOURCE, now)
        elif op == "timer":
            txn.handle_timer(now)
        else:
            txn.transport_error(now)
        check_after(txn, now, was)


layer_ops = st.lists(
    st.tuples(
        st.sampled_from(["invite", "options", "cancel", "ack", "tu", "send", "response", "fail"]),
        st.integers(min_value=0, max_value=3),  # which branch / transaction
        st.sampled_from(STATUSES),
        ADVANCE,
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=layer_ops)
def test_layer_deadline_is_the_earliest_live_deadline(
    ops: list[tuple[str, int, int, float]],
) -> None:
    layer = TransactionLayer(max_transactions=3)
    live: dict[int, Transaction] = {}
    servers: list[ServerTransaction] = []
    clients: list[ClientTransaction] = []
    now = 0.0

    def track(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, RequestReceived | CancelReceived):
                servers.append(event.transaction)
                live[id(event.transaction)] = event.transaction
            elif isinstance(event, TransactionTerminated):
                live.pop(id(event.transaction), None)

    for op, n, status, advance in ops:
        now += advance
        track(layer.handle_timers(now))
        branch = f"z9hG4bK{n}"
        try:
            if op == "invite":
                track(layer.receive_request(request("INVITE", branch=branch), SOURCE, now))
            elif op == "options":
                track(layer.receive_request(request("OPTIONS", branch=branch), SOURCE, now))
            elif op == "cancel":
                cancel = make_cancel(request("INVITE", branch=branch))
                track(layer.receive_request(cancel, SOURCE, now))
            elif op == "ack":
                ack = request("ACK", branch=branch, to_tag="srv1")
                track(layer.receive_request(ack, SOURCE, now))
            elif op == "tu" and servers:
                txn = servers[n % len(servers)]
                track(layer.send_response(txn, response(txn.request, status), now))
            elif op == "send":
                req = request(["INVITE", "OPTIONS"][n % 2], branch=f"z9hG4bKc{n}")
                txn_c, events = layer.send_request(req, DEST, now, reliable=n >= 2)
                clients.append(txn_c)
                live[id(txn_c)] = txn_c
                track(events)
            elif op == "response" and clients:
                txn_c = clients[n % len(clients)]
                reply: Response = response(txn_c.request, status)
                track(layer.receive_response(reply, DEST, now))
            elif op == "fail" and (servers or clients):
                pool: list[Transaction] = [*servers, *clients]
                track(layer.transport_error(pool[n % len(pool)], now))
        except LocalProtocolError:
            pass  # TU misuse (e.g. a second final, a dead transaction): allowed
        deadlines = [d for t in live.values() if (d := t.next_deadline()) is not None]
        expected = min(deadlines, default=None)
        assert layer.next_deadline() == expected
        assert expected is None or expected > now
        assert len(layer) == len(live)
        assert all(not t.terminated for t in live.values())
