"""Which users are in an established call through this server ("In a call" presence).

Theory of operation
-------------------
The router sees every INVITE that sets up a call between local users, and
every BYE that ends one; :class:`CallsFeature` hooks ACCEPTED and feeds this
tracker three facts, keyed by Call-ID (RFC 3261 §12: one dialog per Call-ID
for our purposes):

* :meth:`CallTracker.invite_outcome` -- called with the final status of an
  out-of-dialog INVITE; a 2xx puts the caller and the callee in a call,
  anything else (a failure, or the 487 that follows a CANCEL) puts nobody in
  one;
* :meth:`CallTracker.ended` -- a BYE (in either direction) ends the call;
* :meth:`CallTracker.sweep` -- run periodically: a call older than
  ``max_duration`` is assumed dead (its BYE was lost, or the device vanished
  without sending one), so presence never sticks at "In a call" for ever.

Listeners hear ``(aor, in_call)`` only when a user's state *changes*: a user
in two calls at once leaves "In a call" when the last one ends. Everything is
synchronous and O(1) per event; nothing awaits. The table is bounded by
:data:`MAX_CALLS`: beyond it new calls are not tracked (presence then simply
does not show "In a call" for them; calls themselves are unaffected).

Nothing here survives a restart: calls in progress are forgotten and their
parties show their published state until their next call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from conclave.core.features import ACCEPTED, Exchange, Feature, FeatureHost
from conclave.sip.message import Request

if TYPE_CHECKING:
    from .setup import Setup

log = structlog.get_logger("conclave.calls")

MAX_CALLS = 100_000
"""Calls tracked at once. Each costs a few hundred bytes; this bounds memory
against a client that sets up calls and never hangs up (each also ends by
:data:`MAX_CALL_DURATION`)."""

MAX_CALL_DURATION = 12 * 3600.0
"""A call older than this is taken to be over (a BYE that never came). Long
enough for any real meeting, short enough that a stuck "In a call" clears the
same day."""

SWEEP_INTERVAL = 60.0
"""Seconds between sweeps for calls past :data:`MAX_CALL_DURATION`."""

CallListener = Callable[[str, bool], None]
"""``listener(aor, in_call)``: ``aor`` entered (True) or left (False) every call."""


@dataclass(frozen=True, slots=True)
class Call:
    call_id: str
    parties: tuple[str, ...]
    started_at: float


class CallTracker:
    """Established calls by Call-ID, and how many each user is in."""

    def __init__(
        self,
        *,
        max_calls: int = MAX_CALLS,
        max_duration: float = MAX_CALL_DURATION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_calls = max_calls
        self.max_duration = max_duration
        self.clock = clock
        self._calls: dict[str, Call] = {}
        self._count: dict[str, int] = {}
        self._listeners: list[CallListener] = []

    def add_listener(self, listener: CallListener) -> None:
        self._listeners.append(listener)

    # -- facts from the router / proxy ---------------------------------------------------
    def invite_outcome(self, request: Request) -> Callable[[int], None]:
        """A callback taking the final status of an out-of-dialog INVITE.

        The parties are the From and To addresses of ``request``, read now
        (the request object may change as it is forwarded).
        """
        call_id = request.call_id or ""
        parties = tuple(
            p
            for p in dict.fromkeys(
                (
                    request.from_aor,
                    request.to_aor,
                )
            )
            if p is not None
        )

        def on_final(status: int) -> None:
            if 200 <= status < 300 and call_id:
                self.established(call_id, parties)

        return on_final

    def established(self, call_id: str, parties: Iterable[str], now: float | None = None) -> bool:
        """A call was answered; False if it was already known or the table is full."""
        if call_id in self._calls:
            return False
        if len(self._calls) >= self.max_calls:
            log.warning("call table full; call not tracked for presence", limit=self.max_calls)
            return False
        call = Call(call_id, tuple(dict.fromkeys(parties)), self.clock() if now is None else now)
        self._calls[call_id] = call
        for aor in call.parties:
            self._count[aor] = self._count.get(aor, 0) + 1
            if self._count[aor] == 1:
                self._tell(aor, True)
        return True

    def ended(self, call_id: str | None) -> bool:
        """A BYE (or the call otherwise ended); False if the call was not tracked."""
        call = self._calls.pop(call_id or "", None)
        if call is None:
            return False
        for aor in call.parties:
            left = self._count.get(aor, 0) - 1
            if left <= 0:
                self._count.pop(aor, None)
                self._tell(aor, False)
            else:
                self._count[aor] = left
        return True

    # -- queries -------------------------------------------------------------------------
    def in_call(self, aor: str) -> bool:
        return aor in self._count

    def __len__(self) -> int:
        return len(self._calls)

    # -- safety timeout ------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """End every call older than ``max_duration``; return how many."""
        cutoff = (self.clock() if now is None else now) - self.max_duration
        # Insertion order is start order, so stop at the first young call.
        old = []
        for call in self._calls.values():
            if call.started_at > cutoff:
                break
            old.append(call.call_id)
        for call_id in old:
            log.info("call presumed over (no BYE seen)", call_id=call_id)
            self.ended(call_id)
        return len(old)

    async def run_sweeper(self, interval: float = SWEEP_INTERVAL) -> None:
        """Sweep every ``interval`` seconds until cancelled (one task for all calls)."""
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def _tell(self, aor: str, in_call: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(aor, in_call)
            except Exception:
                log.exception("call listener failed", aor=aor)


class CallsFeature(Feature):
    """Call tracking as a feature: INVITE outcomes and BYEs, for presence."""

    name = "calls"

    def __init__(self, tracker: CallTracker) -> None:
        self.tracker = tracker

    def register(self, host: FeatureHost) -> None:
        host.registry.hook(ACCEPTED, self.accepted)

    def accepted(self, exchange: Exchange) -> None:
        if exchange.method == "INVITE" and not exchange.in_dialog:
            outcome = self.tracker.invite_outcome(exchange.request)
            exchange.when_answered(lambda response: outcome(response.status))
        elif exchange.method == "BYE" and exchange.in_dialog:
            self.tracker.ended(exchange.request.call_id)

    def jobs(self) -> list[Coroutine[object, object, None]]:
        return [self.tracker.run_sweeper()]


def build(setup: Setup) -> CallsFeature:
    """Always on: it costs a dictionary entry per established call."""
    return CallsFeature(CallTracker())
