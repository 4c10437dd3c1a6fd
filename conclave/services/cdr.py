"""Call detail records: who registered, messaged and called whom, when, and how it ended.

Theory of operation
-------------------
The router tells :class:`CdrRecorder` what happens, synchronously and in
O(1) (nothing on the message path waits for the database):

* :meth:`~CdrRecorder.registered` -- a REGISTER was answered (after
  authentication: challenges are not recorded);
* :meth:`~CdrRecorder.outcome` -- returns a callback for a MESSAGE or an
  out-of-dialog INVITE; the router calls it with the final status (it is
  also ``Proxy.forward``'s ``on_final``). A MESSAGE or a failed INVITE
  becomes a record at once; a 2xx INVITE opens a call;
* :meth:`~CdrRecorder.call_ended` -- a BYE closes the open call with the
  same Call-ID (talk time: answer to BYE).

Records wait in a bounded in-memory queue; :meth:`~CdrRecorder.run` writes
them to the database in batches every ``flush_interval`` (or sooner when a
batch fills). **Loss window:** on kill -9 or power loss, records from the
last ``flush_interval`` (1 s by default) and calls still in progress are
lost; a graceful stop writes everything, in-progress calls included (with
no end time). When the queue is full (the database is down for long), new
records are dropped and counted, never blocking calls or messages.
Calls with no BYE are closed after :data:`MAX_CALL_DURATION`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from conclave.config import CdrSection
from conclave.core.features import ACCEPTED, Exchange, Feature, FeatureHost
from conclave.sip.flow import Flow
from conclave.sip.message import Request, Response
from conclave.store.cdr import Cdr, CdrStore
from conclave.store.database import Database

if TYPE_CHECKING:
    from .setup import Setup

log = structlog.get_logger("conclave.cdr")

FLUSH_BATCH = 1000
"""Records written per transaction at most; a full batch is written at once."""

MAX_CALLS = 100_000
"""Open calls tracked at once (a few hundred bytes each); beyond, a call gets no CDR."""

MAX_CALL_DURATION = 12 * 3600.0
"""An answered call with no BYE after this long is recorded as ended (reason says so)."""

PURGE_INTERVAL = 3600.0
"""Seconds between retention purges."""

STOP_FLUSH_TIMEOUT = 5.0
"""Longest a graceful stop waits to write the last records."""

FIELD_LIMIT = 256
"""Longest text kept in a detail field (Contact, User-Agent...)."""

REASONS = {
    200: "answered",
    202: "stored for offline recipient",
    403: "forbidden",
    404: "no such user",
    408: "no answer",
    480: "unavailable",
    486: "busy",
    487: "cancelled",
    488: "not acceptable",
    500: "server error",
    503: "service unavailable",
    603: "declined",
}


class CdrSink(Protocol):
    """Where batches go (:class:`~conclave.store.cdr.CdrStore`)."""

    async def insert_many(self, records: Iterable[Cdr]) -> int: ...

    async def purge_older_than(self, cutoff: dt.datetime) -> int: ...


@dataclass(slots=True)
class _OpenCall:
    caller: str
    callee: str | None
    started: float
    answered: float


def _utc(when: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(when, dt.UTC)


def reason_for(status: int, kind: str) -> str:
    if 200 <= status < 300:
        if kind == "im":
            return "stored for offline recipient" if status == 202 else "delivered"
        return REASONS[200] if kind == "call" else "ok"
    return REASONS.get(status, f"failed ({status // 100}xx)")


class CdrRecorder:
    """Collects CDRs from router events and writes them in the background."""

    def __init__(
        self,
        sink: CdrSink,
        *,
        registrations: bool = True,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        retention: float = 60 * 86400.0,
        max_calls: int = MAX_CALLS,
        max_call_duration: float = MAX_CALL_DURATION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.registrations = registrations
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.retention = retention
        self.max_calls = max_calls
        self.max_call_duration = max_call_duration
        self.clock = clock
        self.written = 0
        self.dropped = 0
        self._queue: collections.deque[Cdr] = collections.deque()
        self._calls: dict[str, _OpenCall] = {}
        self._full = asyncio.Event()

    # -- events from the router (synchronous, O(1)) --------------------------------------
    def registered(self, user: str, request: Request, response: Response, flow: Flow) -> None:
        """A REGISTER from authenticated ``user`` (``sip:user@domain``) was answered."""
        if not self.registrations:
            return
        now = self.clock()
        contact = request.headers.get("Contact") or ""
        expires = request.headers.get("Expires")
        unregister = contact.strip() == "*" or expires == "0" or "expires=0" in contact.lower()
        if 200 <= response.status < 300:
            reason = "unregistered" if unregister else "registered"
        else:
            reason = response.reason or reason_for(response.status, "register")
        host, port = flow.remote[0], flow.remote[1]
        detail: dict[str, Any] = {
            "contact": contact[:FIELD_LIMIT],
            "expires": expires,
            "transport": flow.transport,
            "source": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "user_agent": (request.headers.get("User-Agent") or "")[:FIELD_LIMIT],
        }
        self._add(
            Cdr(
                kind="register",
                call_id=request.call_id or "",
                caller=user,
                callee=None,
                started_at=_utc(now),
                ended_at=_utc(now),
                duration=0.0,
                status=response.status,
                reason=reason,
                detail=detail,
            )
        )

    def outcome(self, request: Request, *, in_dialog: bool = False) -> Callable[[int], None] | None:
        """A callback taking the final status of a MESSAGE or a new INVITE; None for
        anything else (a re-INVITE, a SUBSCRIBE...). Reads the request now."""
        if request.method == "MESSAGE":
            return self._message_outcome(request, in_dialog)
        if request.method == "INVITE" and not in_dialog:
            return self._invite_outcome(request)
        return None

    def _message_outcome(self, request: Request, in_dialog: bool) -> Callable[[int], None]:
        started = self.clock()
        call_id = request.call_id or ""
        caller = request.from_aor or ""
        callee = request.to_aor
        detail = {
            "content_type": (request.headers.get("Content-Type") or "text/plain")[:FIELD_LIMIT],
            "bytes": len(request.body),
            "mode": "session" if in_dialog else "pager",
        }
        done = False

        def on_final(status: int) -> None:
            nonlocal done
            if done:
                return
            done = True
            now = self.clock()
            self._add(
                Cdr(
                    kind="im",
                    call_id=call_id,
                    caller=caller,
                    callee=callee,
                    started_at=_utc(started),
                    ended_at=_utc(now),
                    duration=max(now - started, 0.0),
                    status=status,
                    reason=reason_for(status, "im"),
                    detail=detail,
                )
            )

        return on_final

    def _invite_outcome(self, request: Request) -> Callable[[int], None]:
        started = self.clock()
        call_id = request.call_id or ""
        caller = request.from_aor or ""
        callee = request.to_aor
        done = False

        def on_final(status: int) -> None:
            nonlocal done
            if done:
                return
            done = True
            now = self.clock()
            if 200 <= status < 300:
                if call_id in self._calls:
                    return
                if len(self._calls) >= self.max_calls:
                    log.warning("call table full; call gets no CDR", limit=self.max_calls)
                    return
                self._calls[call_id] = _OpenCall(caller, callee, started, now)
                return
            self._add(
                Cdr(
                    kind="call",
                    call_id=call_id,
                    caller=caller,
                    callee=callee,
                    started_at=_utc(started),
                    ended_at=_utc(now),
                    duration=0.0,
                    status=status,
                    reason=reason_for(status, "call"),
                    detail={"setup_seconds": round(now - started, 3)},
                )
            )

        return on_final

    def call_ended(self, request: Request) -> None:
        """A BYE: the call with its Call-ID is over (unknown calls are ignored)."""
        call = self._calls.pop(request.call_id or "", None)
        if call is None:
            return
        by = request.from_aor
        ended_by = "caller" if by == call.caller else "callee"
        self._close(request.call_id or "", call, "completed", ended_by)

    def _close(
        self, call_id: str, call: _OpenCall, reason: str, ended_by: str | None, *, end: bool = True
    ) -> None:
        now = self.clock()
        detail: dict[str, Any] = {"setup_seconds": round(call.answered - call.started, 3)}
        if ended_by:
            detail["ended_by"] = ended_by
        self._add(
            Cdr(
                kind="call",
                call_id=call_id,
                caller=call.caller,
                callee=call.callee,
                started_at=_utc(call.started),
                answered_at=_utc(call.answered),
                ended_at=_utc(now) if end else None,
                duration=max(now - call.answered, 0.0),
                status=200,
                reason=reason,
                detail=detail,
            )
        )

    def open_calls(self) -> int:
        return len(self._calls)

    def pending(self) -> int:
        """Records waiting to be written."""
        return len(self._queue)

    def _add(self, record: Cdr) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("CDR queue full; records dropped", dropped=self.dropped)
            return
        self._queue.append(record)
        if len(self._queue) >= FLUSH_BATCH:
            self._full.set()

    # -- background ----------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """Close calls answered longer than ``max_call_duration`` ago; return how many."""
        cutoff = (self.clock() if now is None else now) - self.max_call_duration
        old = [cid for cid, call in self._calls.items() if call.answered <= cutoff]
        for call_id in old:
            self._close(call_id, self._calls.pop(call_id), "no BYE seen", None)
        return len(old)

    async def flush(self) -> int:
        """Write everything queued, batch by batch; returns how many were written.

        On a database error the batch goes back to the front of the queue and
        the error propagates (the next round retries).
        """
        total = 0
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(FLUSH_BATCH, len(self._queue)))]
            try:
                await self.sink.insert_many(batch)
            except BaseException:
                self._queue.extendleft(reversed(batch))
                raise
            total += len(batch)
            self.written += len(batch)
        return total

    async def run(self) -> None:
        """Write batches until cancelled; then write what is left, open calls included."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.flush_interval)
                self._full.clear()
                self.sweep()
                try:
                    await self.flush()
                except Exception as exc:
                    log.warning("CDRs not written; will retry", reason=str(exc))
        finally:
            for call_id, call in list(self._calls.items()):
                self._close(call_id, call, "in progress at server stop", None, end=False)
            self._calls.clear()
            try:
                await asyncio.wait_for(self.flush(), STOP_FLUSH_TIMEOUT)
            except Exception as exc:
                log.error("CDRs lost at stop", count=len(self._queue), reason=str(exc))

    def jobs(self) -> list[Coroutine[object, object, None]]:
        """The coroutines to run as tasks for as long as the server runs."""
        return [self.run(), self.run_purge()]

    async def purge_expired(self) -> int:
        cutoff = _utc(self.clock() - self.retention)
        removed = await self.sink.purge_older_than(cutoff)
        if removed:
            log.info("CDRs purged", removed=removed)
        return removed

    async def run_purge(self, interval: float = PURGE_INTERVAL) -> None:
        """Delete CDRs past retention now and every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.purge_expired()
            except Exception as exc:
                log.warning("CDR purge failed", reason=str(exc))
            await asyncio.sleep(interval)


def open_cdr(db: Database, section: CdrSection) -> CdrRecorder | None:
    """The recorder for ``[cdr]`` (None when it is off); run its :meth:`~CdrRecorder.jobs`."""
    if not section.enabled:
        return None
    return CdrRecorder(
        CdrStore(db),
        registrations=section.registrations,
        flush_interval=section.flush_interval,
        max_queue=section.max_queue,
        retention=section.retention,
    )


class CdrFeature(Feature):
    """Call detail records as a feature: on every accepted request it watches
    the final response (REGISTER, MESSAGE, a new INVITE) and a BYE's end of
    a call. Nothing on the request path waits: records are written behind."""

    name = "cdr"

    def __init__(self, recorder: CdrRecorder) -> None:
        self.recorder = recorder

    def register(self, host: FeatureHost) -> None:
        host.registry.hook(ACCEPTED, self.accepted)

    def accepted(self, exchange: Exchange) -> None:
        recorder, request = self.recorder, exchange.request
        if exchange.method == "REGISTER":
            exchange.when_answered(
                lambda response: recorder.registered(
                    exchange.sender, request, response, exchange.flow
                )
            )
            return
        if exchange.method == "BYE" and exchange.in_dialog:
            recorder.call_ended(request)
        outcome = recorder.outcome(request, in_dialog=exchange.in_dialog)
        if outcome is not None:
            exchange.when_answered(lambda response: outcome(response.status))

    def jobs(self) -> list[Coroutine[object, object, None]]:
        return self.recorder.jobs()


def build(setup: Setup) -> CdrFeature | None:
    """On when ``[cdr] enabled``."""
    recorder = open_cdr(setup.db, setup.config.cdr)
    return None if recorder is None else CdrFeature(recorder)
