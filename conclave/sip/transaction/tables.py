"""The four transaction state machines of RFC 3261 §17, as data.

Theory of operation
===================

A SIP *transaction* is a request and every response to it (RFC 3261 §17).
Each side of a transaction runs a small state machine whose job is to make
an unreliable network look reliable to the *transaction user* (TU: the UA
core, a proxy core, or a registrar): it retransmits, absorbs duplicates,
and times out. RFC 3261 defines four machines, and RFC 6026 amends the two
INVITE machines; all four are written out below as transition tables::

    TABLE[(state, input)] = (actions, next_state)

An *input* is one of:

* a message from the network: a response (classified 1xx, 2xx, 300-699)
  for a client transaction; a retransmission of the request, or an ACK,
  for a server transaction;
* a response from the TU (server transactions only);
* a timer firing (Timers A-M of RFC 3261 Appendix A and RFC 6026, plus the
  200 ms "send 100 Trying" timer of §17.2.1);
* a transport error reported by the adapter (§17.1.4, §17.2.4);
* ``START``: the entry actions run once when the transaction is created.

*Actions* are either effects (send the request, pass a response to the TU,
send an ACK, ...) or timer operations (start, stop, back off). The engine in
:mod:`conclave.sip.transaction.base` runs them in order and then moves to
``next_state``. Entering ``TERMINATED`` clears every timer and tells the
layer to forget the transaction.

A pair that is missing from a table is handled deterministically:

* a message from the network, a timer or a transport error is *ignored*.
  This is how the RFC's "absorb" rules are written: a 1xx in Completed, a
  retransmitted response in a non-INVITE Completed, an ACK in Confirmed, a
  retransmitted non-INVITE request in Trying (§17.2.2: "discarded");
* a response from the TU is API misuse and raises
  :class:`~conclave.sip.errors.LocalProtocolError` without changing state
  (for example a second final response, §17.2.2 "MUST be discarded", or any
  response after Terminated).

Timers on reliable transports
-----------------------------
Retransmission timers (A, E, G) are never started over TCP, TLS, SCTP or
WebSocket: the transport retransmits (§17.1.1.2, §17.1.2.2, §17.2.1). The
"wait for stray retransmissions" timers D, I, J and K are zero there, so the
engine fires them at once and the machine passes straight to Terminated.

INVITE client transaction (§17.1.1, Figure 5; RFC 6026 §7.2, §8.4)
------------------------------------------------------------------
Calling: the INVITE is sent, Timer A (T1, doubling, unreliable only) and
Timer B (64*T1) run. A 1xx moves to Proceeding and stops retransmission. A
300-699 is passed up, ACKed by the transaction itself (§17.1.1.3) and moves
to Completed, where Timer D absorbs retransmitted finals by re-sending the
ACK. A 2xx is passed up and, per RFC 6026, moves to *Accepted* for Timer M
(64*T1): further 2xx (from other forks, or retransmissions) are passed to
the TU, which sends the ACK for 2xx itself because that ACK is its own
transaction-less request (§13.2.2.4). Timer B firing is reported as a
timeout; the TU must act as if it had received 408 (§8.1.3.1).

Non-INVITE client transaction (§17.1.2, Figure 6)
-------------------------------------------------
Trying: the request is sent; Timer E (T1, doubling to a cap of T2,
unreliable only) and Timer F (64*T1) run. A 1xx moves to Proceeding, where
Timer E keeps firing every T2. A final response is passed up and moves to
Completed, where Timer K (T4, or 0 on reliable transports) absorbs
retransmitted responses.

INVITE server transaction (§17.2.1, Figure 7; RFC 6026 §7.1, §8.5-§8.7)
-----------------------------------------------------------------------
Proceeding: the INVITE is passed to the TU. If the TU has not answered
within ``TimerConfig.trying_delay`` (200 ms), the transaction sends ``100
Trying`` itself. A retransmitted INVITE re-sends the last provisional
response. A 300-699 from the TU is sent and moves to Completed, where Timer
G (T1, doubling to T2, unreliable only) retransmits it until an ACK arrives
(moving to Confirmed, where Timer I absorbs further ACKs) or Timer H
(64*T1) gives up and reports the missing ACK. A 2xx from the TU is sent and
moves to *Accepted* (RFC 6026) for Timer L (64*T1): the TU — the UAS core,
which retransmits its 2xx until the ACK arrives (§13.3.1.4) — may send more
2xx through the transaction, retransmitted INVITEs are absorbed, and an ACK
that matches is passed to the TU. A proxy forwards 2xx responses upstream
through the transaction as well, and later ones statelessly (§16.7 step 10).

Non-INVITE server transaction (§17.2.2, Figure 8)
-------------------------------------------------
Trying: the request is passed to the TU; retransmissions are discarded
until the TU answers. A 1xx from the TU moves to Proceeding, where a
retransmitted request re-sends the last provisional. A final response moves
to Completed, where retransmitted requests re-send it until Timer J (64*T1,
0 on reliable transports) fires.

Matching messages to transactions (§17.1.3, §17.2.3) is not part of these
machines; see :mod:`conclave.sip.transaction.matching`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias


class State(Enum):
    """Every state used by the four machines."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Timer(Enum):
    """The timers of RFC 3261 Appendix A and RFC 6026 §8.11."""

    A = "A"  # INVITE request retransmit (client, unreliable)
    B = "B"  # INVITE transaction timeout (client)
    D = "D"  # wait for response retransmits (INVITE client)
    E = "E"  # non-INVITE request retransmit (client, unreliable)
    F = "F"  # non-INVITE transaction timeout (client)
    G = "G"  # INVITE response retransmit (server, unreliable)
    H = "H"  # wait for ACK receipt (INVITE server)
    I = "I"  # noqa: E741 - the RFC's name; wait for ACK retransmits (INVITE server)
    J = "J"  # wait for non-INVITE request retransmits (server)
    K = "K"  # wait for response retransmits (non-INVITE client)
    L = "L"  # wait for accepted INVITE retransmits (server, RFC 6026)
    M = "M"  # wait for retransmitted 2xx (client, RFC 6026)
    TRYING = "100"  # send 100 Trying if the TU is silent (server, §17.2.1)


class Input(Enum):
    """What can happen to a transaction."""

    START = "start"
    RESPONSE_1XX = "1xx received"
    RESPONSE_2XX = "2xx received"
    RESPONSE_FINAL = "300-699 received"
    REQUEST = "request retransmitted"
    ACK = "ACK received"
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_FINAL = "300-699 from TU"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "Timer 100"


TIMER_INPUT: dict[Timer, Input] = {t: Input[f"TIMER_{t.name}"] for t in Timer}
"""The input a timer feeds to its machine when it fires."""

TU_INPUTS: frozenset[Input] = frozenset({Input.TU_1XX, Input.TU_2XX, Input.TU_FINAL})
"""Inputs that come from the TU: a missing pair for these is API misuse."""


class Effect(Enum):
    """Side effects a transition can have (interpreted by the engine)."""

    SEND_REQUEST = "send request"  # client: (re)transmit the request
    PASS_RESPONSE = "pass response to TU"  # client: ResponseReceived
    SEND_ACK = "send ACK"  # INVITE client: ACK a 300-699 (§17.1.1.3)
    SEND_RESPONSE = "send TU response"  # server: transmit and remember it
    RESEND_RESPONSE = "resend last response"  # server: on request retransmission / Timer G
    SEND_TRYING = "send 100 Trying"  # INVITE server (§17.2.1)
    PASS_ACK = "pass ACK to TU"  # INVITE server in Accepted (RFC 6026 §8.7)
    REPORT_TIMEOUT = "report timeout"  # Timer B, F or H: TransactionTimeout
    REPORT_TRANSPORT_ERROR = "report transport error"  # TransportFailed


class TimerOp(Enum):
    START = "start"  # arm with the timer's initial duration
    STOP = "stop"
    BACKOFF = "backoff"  # re-arm with double the last interval (A: no cap; E, G: cap T2)
    RESET_T2 = "reset to T2"  # re-arm with T2 (Timer E in Proceeding, §17.1.2.2)


@dataclass(frozen=True)
class TimerAction:
    op: TimerOp
    timer: Timer

    def __str__(self) -> str:
        return f"{self.op.value} {self.timer.value}"


Action: TypeAlias = Effect | TimerAction
Transition: TypeAlias = tuple[tuple[Action, ...], State]
Table: TypeAlias = dict[tuple[State, Input], Transition]


def start(timer: Timer) -> TimerAction:
    return TimerAction(TimerOp.START, timer)


def stop(timer: Timer) -> TimerAction:
    return TimerAction(TimerOp.STOP, timer)


def backoff(timer: Timer) -> TimerAction:
    return TimerAction(TimerOp.BACKOFF, timer)


S, In, E, T = State, Input, Effect, Timer

INVITE_CLIENT: Table = {
    (S.CALLING, In.START): ((E.SEND_REQUEST, start(T.A), start(T.B)), S.CALLING),
    (S.CALLING, In.TIMER_A): ((E.SEND_REQUEST, backoff(T.A)), S.CALLING),
    (S.CALLING, In.TIMER_B): ((E.REPORT_TIMEOUT,), S.TERMINATED),
    (S.CALLING, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    (S.CALLING, In.RESPONSE_1XX): ((stop(T.A), stop(T.B), E.PASS_RESPONSE), S.PROCEEDING),
    (S.CALLING, In.RESPONSE_2XX): (
        (stop(T.A), stop(T.B), E.PASS_RESPONSE, start(T.M)),
        S.ACCEPTED,
    ),
    (S.CALLING, In.RESPONSE_FINAL): (
        (stop(T.A), stop(T.B), E.PASS_RESPONSE, E.SEND_ACK, start(T.D)),
        S.COMPLETED,
    ),
    (S.PROCEEDING, In.RESPONSE_1XX): ((E.PASS_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_2XX): ((E.PASS_RESPONSE, start(T.M)), S.ACCEPTED),
    (S.PROCEEDING, In.RESPONSE_FINAL): (
        (E.PASS_RESPONSE, E.SEND_ACK, start(T.D)),
        S.COMPLETED,
    ),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    # Completed: a retransmitted final is absorbed by re-sending the ACK.
    (S.COMPLETED, In.RESPONSE_FINAL): ((E.SEND_ACK,), S.COMPLETED),
    (S.COMPLETED, In.TIMER_D): ((), S.TERMINATED),
    (S.COMPLETED, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    # Accepted (RFC 6026 §7.2): every 2xx goes up; the TU ACKs each one.
    (S.ACCEPTED, In.RESPONSE_2XX): ((E.PASS_RESPONSE,), S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_M): ((), S.TERMINATED),
}
"""RFC 3261 Figure 5 with RFC 6026 Figure 5's Accepted state."""

NON_INVITE_CLIENT: Table = {
    (S.TRYING, In.START): ((E.SEND_REQUEST, start(T.E), start(T.F)), S.TRYING),
    (S.TRYING, In.TIMER_E): ((E.SEND_REQUEST, backoff(T.E)), S.TRYING),
    (S.TRYING, In.TIMER_F): ((E.REPORT_TIMEOUT,), S.TERMINATED),
    (S.TRYING, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    (S.TRYING, In.RESPONSE_1XX): ((E.PASS_RESPONSE,), S.PROCEEDING),
    (S.TRYING, In.RESPONSE_2XX): (
        (stop(T.E), stop(T.F), E.PASS_RESPONSE, start(T.K)),
        S.COMPLETED,
    ),
    (S.TRYING, In.RESPONSE_FINAL): (
        (stop(T.E), stop(T.F), E.PASS_RESPONSE, start(T.K)),
        S.COMPLETED,
    ),
    (S.PROCEEDING, In.TIMER_E): (
        (E.SEND_REQUEST, TimerAction(TimerOp.RESET_T2, T.E)),
        S.PROCEEDING,
    ),
    (S.PROCEEDING, In.TIMER_F): ((E.REPORT_TIMEOUT,), S.TERMINATED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    (S.PROCEEDING, In.RESPONSE_1XX): ((E.PASS_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_2XX): (
        (stop(T.E), stop(T.F), E.PASS_RESPONSE, start(T.K)),
        S.COMPLETED,
    ),
    (S.PROCEEDING, In.RESPONSE_FINAL): (
        (stop(T.E), stop(T.F), E.PASS_RESPONSE, start(T.K)),
        S.COMPLETED,
    ),
    # Completed: retransmitted responses are absorbed (missing pairs).
    (S.COMPLETED, In.TIMER_K): ((), S.TERMINATED),
}
"""RFC 3261 Figure 6."""

INVITE_SERVER: Table = {
    (S.PROCEEDING, In.START): ((start(T.TRYING),), S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_TRYING): ((E.SEND_TRYING,), S.PROCEEDING),
    (S.PROCEEDING, In.REQUEST): ((E.RESEND_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.TU_1XX): ((stop(T.TRYING), E.SEND_RESPONSE), S.PROCEEDING),
    (S.PROCEEDING, In.TU_2XX): ((stop(T.TRYING), E.SEND_RESPONSE, start(T.L)), S.ACCEPTED),
    (S.PROCEEDING, In.TU_FINAL): (
        (stop(T.TRYING), E.SEND_RESPONSE, start(T.G), start(T.H)),
        S.COMPLETED,
    ),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    (S.COMPLETED, In.REQUEST): ((E.RESEND_RESPONSE,), S.COMPLETED),
    (S.COMPLETED, In.TIMER_G): ((E.RESEND_RESPONSE, backoff(T.G)), S.COMPLETED),
    (S.COMPLETED, In.TIMER_H): ((E.REPORT_TIMEOUT,), S.TERMINATED),
    (S.COMPLETED, In.ACK): ((stop(T.G), stop(T.H), start(T.I)), S.CONFIRMED),
    (S.COMPLETED, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    # Confirmed: further ACKs and INVITEs are absorbed (missing pairs).
    (S.CONFIRMED, In.TIMER_I): ((), S.TERMINATED),
    # Accepted (RFC 6026 §8.7): INVITE retransmissions absorbed (missing
    # pair); 2xx from the TU sent; a matching ACK goes to the TU. A transport
    # error is reported but the TU owns the 2xx, so the state is kept.
    (S.ACCEPTED, In.TU_2XX): ((E.SEND_RESPONSE,), S.ACCEPTED),
    (S.ACCEPTED, In.ACK): ((E.PASS_ACK,), S.ACCEPTED),
    (S.ACCEPTED, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_L): ((), S.TERMINATED),
}
"""RFC 3261 Figure 7 with RFC 6026 Figure 7's Accepted state."""

NON_INVITE_SERVER: Table = {
    (S.TRYING, In.START): ((), S.TRYING),
    # Trying: retransmissions are discarded (missing pair, §17.2.2).
    (S.TRYING, In.TU_1XX): ((E.SEND_RESPONSE,), S.PROCEEDING),
    (S.TRYING, In.TU_2XX): ((E.SEND_RESPONSE, start(T.J)), S.COMPLETED),
    (S.TRYING, In.TU_FINAL): ((E.SEND_RESPONSE, start(T.J)), S.COMPLETED),
    (S.TRYING, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    (S.PROCEEDING, In.REQUEST): ((E.RESEND_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.TU_1XX): ((E.SEND_RESPONSE,), S.PROCEEDING),
    (S.PROCEEDING, In.TU_2XX): ((E.SEND_RESPONSE, start(T.J)), S.COMPLETED),
    (S.PROCEEDING, In.TU_FINAL): ((E.SEND_RESPONSE, start(T.J)), S.COMPLETED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    (S.COMPLETED, In.REQUEST): ((E.RESEND_RESPONSE,), S.COMPLETED),
    (S.COMPLETED, In.TRANSPORT_ERROR): ((E.REPORT_TRANSPORT_ERROR,), S.TERMINATED),
    (S.COMPLETED, In.TIMER_J): ((), S.TERMINATED),
}
"""RFC 3261 Figure 8."""

del S, In, E, T


def initial_state(table: Table) -> State:
    """The state a machine starts in: the one that accepts ``START``."""
    for (state, inp), _ in table.items():
        if inp is Input.START:
            return state
    raise ValueError("table has no START transition")


def to_dot(table: Table, name: str) -> str:
    """Render a table as a Graphviz digraph (for the documentation)."""
    lines = [f'digraph "{name}" {{', "  rankdir=LR;"]
    for (state, inp), (actions, nxt) in table.items():
        label = inp.value
        if actions:
            label += " / " + ", ".join(
                a.value if isinstance(a, Effect) else str(a) for a in actions
            )
        lines.append(f'  "{state.value}" -> "{nxt.value}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines)
