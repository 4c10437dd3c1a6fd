"""The engine shared by all four machines: run a transition table, keep timers.

A transaction never reads a clock. Every input carries ``now`` (seconds, any
monotonic origin the caller likes); timers are kept as absolute deadlines.
The caller asks :meth:`Transaction.next_deadline` when to come back and calls
:meth:`Transaction.handle_timer` at (or after) that time. After any call with
``now``, every remaining deadline is strictly later than ``now``.
"""

from __future__ import annotations

from ..errors import LocalProtocolError
from ..message import Request, Response
from .config import TimerConfig
from .events import Event, TransactionTerminated
from .tables import (
    TIMER_INPUT,
    TU_INPUTS,
    Effect,
    Input,
    State,
    Table,
    Timer,
    TimerAction,
    TimerOp,
    initial_state,
)

_RETRANSMIT_TIMERS = frozenset({Timer.A, Timer.E, Timer.G})
"""Started on unreliable transports only (§17.1.1.2, §17.1.2.2, §17.2.1)."""

_CAPPED_AT_T2 = frozenset({Timer.E, Timer.G})
"""Timer A doubles without limit (§17.1.1.2); E and G stop at T2."""

_TIMER_ORDER = {timer: i for i, timer in enumerate(Timer)}
"""Tie-break when two timers share a deadline: the enum order, so that a
retransmission (A) is sent before the timeout (B) that coincides with it."""


class Transaction:
    """A state machine driven by one of the tables in :mod:`.tables`.

    Subclasses supply the effects (:meth:`_effect`); this class owns the
    state, the timers and the rules for missing table entries.
    """

    def __init__(
        self, table: Table, request: Request, *, reliable: bool, config: TimerConfig
    ) -> None:
        self._table = table
        self.request = request
        """The request that created the transaction."""
        self.reliable = reliable
        """True over TCP, TLS, SCTP and WebSocket: no retransmissions, and
        Timers D, I, J, K are zero."""
        self.config = config
        self._state = initial_state(table)
        self._deadlines: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}
        self._started = False

    # -- read-only view ----------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def terminated(self) -> bool:
        return self._state is State.TERMINATED

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def deadlines(self) -> dict[Timer, float]:
        """The armed timers and their deadlines (a copy, for inspection)."""
        return dict(self._deadlines)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        return min(self._deadlines.values(), default=None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self._state.value}>"

    # -- inputs ------------------------------------------------------------------
    def start(self, now: float) -> list[Event]:
        """Run the entry actions (send the request, arm the first timers).

        Called once, by the layer, right after creating the transaction.
        """
        if self._started:
            raise LocalProtocolError(f"{self!r} was already started")
        self._started = True
        return self._feed(Input.START, now)

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer whose deadline is at or before ``now``, in order."""
        events: list[Event] = []
        while self._deadlines:
            timer, deadline = min(
                self._deadlines.items(), key=lambda kv: (kv[1], _TIMER_ORDER[kv[0]])
            )
            if deadline > now:
                break
            del self._deadlines[timer]
            events += self._feed(TIMER_INPUT[timer], now)
        return events

    def transport_error(self, now: float) -> list[Event]:
        """The adapter could not send for this transaction (§17.1.4, §17.2.4)."""
        return self._feed(Input.TRANSPORT_ERROR, now)

    # -- the engine --------------------------------------------------------------
    def _feed(
        self,
        inp: Input,
        now: float,
        message: Request | Response | None = None,
        source: object = None,
    ) -> list[Event]:
        if not self._started and inp is not Input.START:
            raise LocalProtocolError(f"{self!r} has not been started")
        transition = self._table.get((self._state, inp))
        if transition is None:
            if inp in TU_INPUTS:
                raise LocalProtocolError(
                    f"{self!r}: a {inp.value.removesuffix(' from TU')} response "
                    f"cannot be sent in state {self._state.value}"
                )
            # Network input, timer or transport error with no transition:
            # absorbed, as the RFC's figures say (see the theory of operation).
            return []
        actions, next_state = transition
        events: list[Event] = []
        fire_now: list[Timer] = []
        for action in actions:
            if isinstance(action, TimerAction):
                if self._timer(action, now):
                    fire_now.append(action.timer)
            else:
                self._effect(action, inp, now, message, source, events)
        self._state = next_state
        if next_state is State.TERMINATED:
            self._deadlines.clear()
            events.append(TransactionTerminated(self))
            return events
        # A zero-length timer (D, I, J, K on a reliable transport; Trying with
        # trying_delay=0) fires at once rather than leaving a deadline of now.
        for timer in fire_now:
            if self._deadlines.pop(timer, None) is not None:
                events += self._feed(TIMER_INPUT[timer], now)
        return events

    def _timer(self, action: TimerAction, now: float) -> bool:
        """Apply a timer operation; True if it armed a zero-length timer."""
        timer, op = action.timer, action.op
        if op is TimerOp.STOP:
            self._deadlines.pop(timer, None)
            return False
        if op is TimerOp.START:
            interval = self._initial_interval(timer)
            if interval is None:
                return False
        elif timer not in self._intervals:
            return False  # never armed (reliable transport): nothing to back off
        elif op is TimerOp.BACKOFF:
            interval = 2 * self._intervals[timer]
            if timer in _CAPPED_AT_T2:
                interval = min(interval, self.config.T2)
        else:  # TimerOp.RESET_T2
            interval = self.config.T2
        self._intervals[timer] = interval
        self._deadlines[timer] = now + interval
        return interval <= 0

    def _initial_interval(self, timer: Timer) -> float | None:
        """The first duration of ``timer`` (RFC 3261 Appendix A), None if unused."""
        cfg, reliable = self.config, self.reliable
        if timer in _RETRANSMIT_TIMERS:
            return None if reliable else cfg.T1
        if timer is Timer.D:
            return cfg.timer_d(reliable)
        if timer is Timer.I:
            return cfg.timer_i(reliable)
        if timer is Timer.J:
            return cfg.timer_j(reliable)
        if timer is Timer.K:
            return cfg.timer_k(reliable)
        if timer is Timer.TRYING:
            return cfg.trying_delay
        return cfg.timeout  # B, F, H, L, M: 64*T1

    def _effect(
        self,
        effect: Effect,
        inp: Input,
        now: float,
        message: Request | Response | None,
        source: object,
        events: list[Event],
    ) -> None:
        """Carry out ``effect`` (caused by ``inp``), appending to ``events``."""
        raise NotImplementedError
