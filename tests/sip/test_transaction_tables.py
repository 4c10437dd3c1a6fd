"""Every (state, input) pair of the four tables, present or missing, and module hygiene."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from conclave.sip import transaction as transaction_pkg
from conclave.sip.errors import LocalProtocolError
from conclave.sip.transaction import ClientTransaction, ServerTransaction, State, Transaction
from conclave.sip.transaction.tables import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    TIMER_INPUT,
    TU_INPUTS,
    Input,
    Table,
    initial_state,
    to_dot,
)

from .test_transaction_support import DEST, SOURCE, request, response

# How to bring a fresh machine (unreliable transport, started at t=0) into each state.
Driver = Callable[[Transaction], None]


def _resp(status: int) -> Driver:
    def drive(txn: Transaction) -> None:
        assert isinstance(txn, ClientTransaction)
        txn.receive_response(response(txn.request, status), 0.0)

    return drive


def _tu(*statuses: int, ack: bool = False) -> Driver:
    def drive(txn: Transaction) -> None:
        assert isinstance(txn, ServerTransaction)
        for status in statuses:
            txn.send_response(response(txn.request, status), 0.0)
        if ack:
            txn.receive_request(request("ACK", to_tag="srv1"), SOURCE, 0.0)

    return drive


def _nothing(txn: Transaction) -> None:
    pass


MACHINES: dict[str, tuple[Table, str, bool, dict[State, Driver]]] = {
    "invite client": (
        INVITE_CLIENT,
        "INVITE",
        True,
        {
            State.CALLING: _nothing,
            State.PROCEEDING: _resp(180),
            State.COMPLETED: _resp(486),
            State.ACCEPTED: _resp(200),
        },
    ),
    "non-invite client": (
        NON_INVITE_CLIENT,
        "OPTIONS",
        True,
        {State.TRYING: _nothing, State.PROCEEDING: _resp(180), State.COMPLETED: _resp(200)},
    ),
    "invite server": (
        INVITE_SERVER,
        "INVITE",
        False,
        {
            State.PROCEEDING: _nothing,
            State.COMPLETED: _tu(486),
            State.CONFIRMED: _tu(486, ack=True),
            State.ACCEPTED: _tu(200),
        },
    ),
    "non-invite server": (
        NON_INVITE_SERVER,
        "OPTIONS",
        False,
        {State.TRYING: _nothing, State.PROCEEDING: _tu(100), State.COMPLETED: _tu(200)},
    ),
}


def fresh(name: str, state: State) -> Transaction:
    _, method, client, drivers = MACHINES[name]
    txn: Transaction
    if client:
        txn = ClientTransaction(request(method), DEST, reliable=False)
    else:
        txn = ServerTransaction(request(method), SOURCE, reliable=False)
    txn.start(0.0)
    drivers[state](txn)
    assert txn.state is state
    return txn


def apply(txn: Transaction, inp: Input) -> None:
    """Feed ``inp`` through the public API."""
    statuses = {"1XX": 180, "2XX": 200, "FINAL": 486}
    if inp.name.startswith("RESPONSE_"):
        assert isinstance(txn, ClientTransaction)
        txn.receive_response(response(txn.request, statuses[inp.name[9:]]), 0.0)
    elif inp.name.startswith("TU_"):
        assert isinstance(txn, ServerTransaction)
        txn.send_response(response(txn.request, statuses[inp.name[3:]]), 0.0)
    elif inp is Input.REQUEST:
        assert isinstance(txn, ServerTransaction)
        txn.receive_request(request(txn.method), SOURCE, 0.0)
    elif inp is Input.ACK:
        assert isinstance(txn, ServerTransaction)
        txn.receive_request(request("ACK", to_tag="srv1"), SOURCE, 0.0)
    elif inp is Input.TRANSPORT_ERROR:
        txn.transport_error(0.0)
    else:
        (timer,) = [t for t, i in TIMER_INPUT.items() if i is inp]
        deadline = txn.deadlines()[timer]
        txn.handle_timer(deadline)


def _pairs() -> list[tuple[str, State, Input]]:
    out: list[tuple[str, State, Input]] = []
    for name, (_, _, client, drivers) in MACHINES.items():
        for state in drivers:
            for inp in Input:
                if inp is Input.START:
                    continue
                if client and (inp.name.startswith("TU_") or inp in (Input.REQUEST, Input.ACK)):
                    continue
                if not client and inp.name.startswith("RESPONSE_"):
                    continue
                out.append((name, state, inp))
    return out


@pytest.mark.parametrize(("name", "state", "inp"), _pairs())
def test_every_pair(name: str, state: State, inp: Input) -> None:
    table = MACHINES[name][0]
    txn = fresh(name, state)
    transition = table.get((state, inp))
    if transition is not None:
        if inp in TIMER_INPUT.values():
            (timer,) = [t for t, i in TIMER_INPUT.items() if i is inp]
            assert timer in txn.deadlines(), f"{timer} must be armed in {state}"
        apply(txn, inp)
        assert txn.state is transition[1]
        return
    if inp in TIMER_INPUT.values():
        (timer,) = [t for t, i in TIMER_INPUT.items() if i is inp]
        # A timer with no transition in this state is never armed in it.
        assert timer not in txn.deadlines()
        return
    before = (txn.state, txn.deadlines())
    if inp in TU_INPUTS:
        with pytest.raises(LocalProtocolError):
            apply(txn, inp)
    else:
        apply(txn, inp)  # absorbed
    assert (txn.state, txn.deadlines()) == before


@pytest.mark.parametrize("name", list(MACHINES))
def test_tables_are_well_formed(name: str) -> None:
    table, _, _, drivers = MACHINES[name]
    states = {s for s, _ in table} | {n for _, n in table.values()}
    assert State.TERMINATED in states
    assert not [k for k in table if k[0] is State.TERMINATED]  # Terminated is final
    assert set(drivers) == states - {State.TERMINATED}
    assert (initial_state(table), Input.START) in table
    # Every state can reach Terminated.
    reach = {State.TERMINATED}
    changed = True
    while changed:
        changed = False
        for (src, _), (_, dst) in table.items():
            if dst in reach and src not in reach:
                reach.add(src)
                changed = True
    assert reach == states
    dot = to_dot(table, name)
    assert all(f'"{s.value}"' in dot for s in states)


FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "time", "threading", "random"}


def test_the_package_is_sans_io() -> None:
    root = Path(transaction_pkg.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert not FORBIDDEN & set(names), f"{path.name} imports {names}"
