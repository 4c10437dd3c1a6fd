"""The SIP stack: transport <-> parser <-> transaction layer <-> transaction user.

This is the asyncio-facing glue (aioquic's shape): bytes arrive from the
transport, are parsed, pass the source guard and the receipt checks, go
through the sans-IO :class:`~conclave.sip.transaction.TransactionLayer`,
and the resulting events are dispatched: ``Transmit`` to the transport,
everything else to the :class:`TransactionUser`. One loop timer serves
every transaction: after each input the stack re-arms it for the layer's
next deadline.

Nothing here waits: every handler runs to completion on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from conclave.core.overload import Admission
from conclave.ops import metrics
from conclave.ops.throttle import LogThrottle
from conclave.ops.trace import TRACER
from conclave.sip.errors import LocalProtocolError, RemoteProtocolError
from conclave.sip.flow import MESSAGE_TRANSPORTS, Flow
from conclave.sip.ids import new_tag
from conclave.sip.message import Request, Response, default_reason, make_response
from conclave.sip.parser import parse_message, salvage_error_response
from conclave.sip.transaction import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
    TransportFailed,
)
from conclave.sip.validate import check_request, check_response
from conclave.transport.guard import SourceGuard, Verdict

log = structlog.get_logger("conclave.stack")

OVERLOAD_LOG_INTERVAL = 10.0
"""Seconds between two "overloaded" warnings: one line per refused request
would add a log flood to the overload."""


class TransactionUser(Protocol):
    """What the stack hands requests and unmatched responses to (the router)."""

    def on_request(self, txn: ServerTransaction, request: Request) -> None: ...
    def on_cancel(
        self, txn: ServerTransaction, request: Request, invite: ServerTransaction | None
    ) -> None: ...
    def on_ack(self, request: Request, flow: Flow) -> None: ...
    def on_stray_response(self, response: Response, flow: Flow) -> None: ...
    def on_terminated(self, txn: Any) -> None: ...


class ClientOwner(Protocol):
    """Whoever sent a request on a client transaction hears how it ended.

    The stack records the owner *before* the first transmission, so a send
    that fails at once (a full UDP buffer, a connection closed under the
    write) reaches it like any later failure: one transaction-to-owner map
    carries every response and failure.
    """

    def on_response(self, txn: ClientTransaction, response: Response) -> None:
        """Any response matched to ``txn`` (provisional ones too)."""

    def on_failure(self, txn: ClientTransaction, status: int) -> None:
        """``txn`` timed out (408) or could not be sent (503); no response follows."""


@dataclass(frozen=True, slots=True)
class ClientCallbacks:
    """A :class:`ClientOwner` made of two callables (e.g. partials over one item)."""

    response: Callable[[ClientTransaction, Response], None]
    failure: Callable[[ClientTransaction, int], None]

    def on_response(self, txn: ClientTransaction, response: Response) -> None:
        self.response(txn, response)

    def on_failure(self, txn: ClientTransaction, status: int) -> None:
        self.failure(txn, status)


class Sender(Protocol):
    def send(self, flow: Flow, data: bytes) -> bool: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Time and timers: the running event loop, or a stepped clock in tests."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...
    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> Cancellable: ...


class SipStack:
    """Owns the transaction layer and its timer; routes events to the TU."""

    def __init__(
        self,
        *,
        layer: TransactionLayer,
        guard: SourceGuard,
        supported: frozenset[str],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.layer = layer
        self.guard = guard
        self.supported = supported
        self.wall_clock = wall_clock
        self.tu: TransactionUser | None = None
        self.sender: Sender | None = None
        self.draining = False
        self.scheduler: Scheduler | None = None
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None
        self.counters: dict[str, int] = {"received": 0, "malformed": 0, "dropped": 0}
        self.admission = Admission()
        self._shed_logged_at = float("-inf")
        # Lines a stranger can cause, bounded per kind (conclave.ops.throttle).
        self._flood_logs: dict[str, LogThrottle] = {}
        self._owners: dict[ClientTransaction, ClientOwner] = {}
        self._answer_listeners: dict[ServerTransaction, list[Callable[[Response], None]]] = {}
        # Arrival time of each server transaction's request, for the latency
        # histogram; weak, so a transaction that is never answered is not kept.
        self._arrived: weakref.WeakKeyDictionary[ServerTransaction, float] = (
            weakref.WeakKeyDictionary()
        )

    # -- wiring --------------------------------------------------------------------------
    def attach(
        self, tu: TransactionUser, sender: Sender, scheduler: Scheduler | None = None
    ) -> None:
        """Start: requests go to ``tu``, bytes to ``sender``; timers run on
        ``scheduler`` (default: the running event loop)."""
        self.tu = tu
        self.sender = sender
        self.scheduler = scheduler if scheduler is not None else asyncio.get_running_loop()

    def now(self) -> float:
        """Monotonic time for the transaction layer."""
        assert self.scheduler is not None
        return self.scheduler.time()

    # -- inbound -------------------------------------------------------------------------
    def on_message(
        self, data: bytes, flow: Flow, queued: float = 0.0, *, guarded: bool = True
    ) -> None:
        """Called by the transport for every datagram or stream frame;
        ``queued`` is how long a datagram waited in the kernel (overload
        control, :mod:`conclave.core.overload`). ``guarded=False`` skips the
        per-source limits: a federated partner's authenticated connection,
        which carries all its users and is limited per partner instead."""
        self.counters["received"] += 1
        ip = flow.remote[0]
        verdict = self.guard.allow(ip, self.wall_clock()) if guarded else Verdict.ALLOWED
        if verdict is not Verdict.ALLOWED:
            self.counters["dropped"] += 1
            if verdict is Verdict.BANNED_NOW:
                metrics.SOURCE_BANS.inc()
                log.warning(
                    "source banned",
                    source=ip,
                    reason="request rate",
                    seconds=self.guard.ban_length(ip),
                )
            return
        if queued and (refusal := self.admission.refusal(data, queued, self.now())) is not None:
            self._shed(refusal, flow, queued)
            return
        try:
            # A datagram and a WebSocket message each hold exactly one message, so
            # Content-Length is optional there (RFC 3261 §18.3, RFC 7118 §5).
            message = parse_message(data, datagram=flow.transport in MESSAGE_TRANSPORTS)
        except RemoteProtocolError as exc:
            self._malformed(data, flow, exc)
            return
        if TRACER.active:  # an on-demand debug session (conclave logs debug)
            TRACER.message("in", data, flow.transport, flow.remote)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(call_id=message.call_id)
        try:
            if isinstance(message, Request):
                self._inbound_request(message, flow)
            else:
                self._inbound_response(message, flow)
        finally:
            structlog.contextvars.clear_contextvars()
            self._rearm()

    def _shed(self, refusal: bytes, flow: Flow, queued: float) -> None:
        """Overload: answer 503 to a request that waited too long, unparsed."""
        metrics.OVERLOAD_REFUSED.inc()
        if refusal and self.sender is not None:
            self.sender.send(flow, refusal)
        now = self.wall_clock()
        if now - self._shed_logged_at >= OVERLOAD_LOG_INTERVAL:
            log.warning(
                "overloaded: refusing requests that waited too long",
                waited_ms=round(queued * 1000),
                refused_total=self.admission.refused,
            )
            self._shed_logged_at = now

    def flood_log(self, event: str, **fields: object) -> None:
        """Log ``event`` at info unless lines of this event have been too many
        lately: what strangers can cause (malformed input, refused requests,
        responses nobody asked for) must not become a log flood."""
        throttle = self._flood_logs.get(event)
        if throttle is None:
            throttle = self._flood_logs[event] = LogThrottle()
        suppressed = throttle.admit()
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
        log.info(event, **fields)

    def _malformed(self, data: bytes, flow: Flow, exc: RemoteProtocolError) -> None:
        self.counters["malformed"] += 1
        answer = salvage_error_response(data, exc)
        self.flood_log(
            "malformed message",
            source=str(flow),
            reason=exc.reason,
            status=exc.status,
            answered=answer is not None,
        )
        if answer is not None and self.sender is not None:
            self.sender.send(flow, answer)

    def _inbound_request(self, req: Request, flow: Flow) -> None:
        metrics.count_request(req.method)
        _stamp_via(req, flow)
        try:
            check_request(req, supported=self.supported, check_require=False, forwarding=False)
        except RemoteProtocolError as exc:
            self.flood_log(
                "request refused", method=req.method, status=exc.status, reason=exc.reason
            )
            if req.method != "ACK":
                self.respond_stateless(req, flow, exc.status, exc.reason, exc.headers)
            return
        try:
            events = self.layer.receive_request(req, flow, self.now(), reliable=flow.reliable)
        except RemoteProtocolError as exc:
            if req.method != "ACK":
                self.respond_stateless(req, flow, exc.status, exc.reason, exc.headers)
            return
        self.dispatch(events)

    def _inbound_response(self, resp: Response, flow: Flow) -> None:
        try:
            check_response(resp)
            events = self.layer.receive_response(resp, flow, self.now())
        except RemoteProtocolError as exc:
            self.flood_log("response dropped", status=resp.status, reason=exc.reason)
            return
        self.dispatch(events)

    # -- outbound ------------------------------------------------------------------------
    def respond_stateless(
        self,
        req: Request,
        flow: Flow,
        status: int,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        resp = make_response(
            req, status, reason or default_reason(status), to_tag=new_tag(), headers=headers
        )
        metrics.count_response(req.method, status)
        self.dispatch(self.layer.send_stateless(resp, flow))

    def respond(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        body: bytes = b"",
        to_tag: str | None = None,
        once: bool = False,
    ) -> None:
        """Answer ``txn``'s request with a locally generated response.

        ``once``: send this final response a single time and end the
        transaction (:meth:`TransactionLayer.send_final_once`), for challenges
        to sources not yet authenticated."""
        resp = make_response(
            txn.request,
            status,
            reason,
            to_tag=to_tag or new_tag(),
            headers=tuple(headers),
            body=body,
        )
        if once:
            self._send_once(txn, resp)
        else:
            self.send_response(txn, resp)

    def _send_once(self, txn: ServerTransaction, resp: Response) -> None:
        try:
            events = self.layer.send_final_once(txn, resp, self.now())
        except LocalProtocolError as exc:
            log.debug("response not sent", status=resp.status, reason=str(exc))
            return
        metrics.count_response(txn.request.method, resp.status)
        self._arrived.pop(txn, None)
        self._answered(txn, resp)
        self.dispatch(events)
        self._rearm()

    def send_response(self, txn: ServerTransaction, resp: Response) -> bool:
        """Send on ``txn``; False if its state no longer allows it (e.g. it ended)."""
        try:
            events = self.layer.send_response(txn, resp, self.now())
        except LocalProtocolError as exc:
            log.debug("response not sent", status=resp.status, reason=str(exc))
            return False
        method = txn.request.method
        metrics.count_response(method, resp.status)
        if resp.status >= 200:
            if (arrived := self._arrived.pop(txn, None)) is not None:
                metrics.observe_transaction(method, self.now() - arrived)
            self._answered(txn, resp)
        self.dispatch(events)
        self._rearm()
        return True

    def when_answered(self, txn: ServerTransaction, listener: Callable[[Response], None]) -> None:
        """Call ``listener`` with the first final response sent on ``txn``."""
        self._answer_listeners.setdefault(txn, []).append(listener)

    def _answered(self, txn: ServerTransaction, resp: Response) -> None:
        for listener in self._answer_listeners.pop(txn, ()):
            try:
                listener(resp)
            except Exception:  # one feature's bug must not cost the caller its answer
                log.exception("answer listener failed", status=resp.status)

    def send_request(
        self, req: Request, flow: Flow, owner: ClientOwner | None = None
    ) -> ClientTransaction:
        """Send ``req`` on a new client transaction; ``owner`` hears its outcome.

        Raises LocalProtocolError (TransactionLimitError when the table is
        full) when no transaction was started; the owner is then not called.
        A failure after the start, even during this call, goes to ``owner``.
        """
        txn, events = self.layer.send_request(req, flow, self.now(), reliable=flow.reliable)
        if owner is not None:
            self._owners[txn] = owner
        self.dispatch(events)
        self._rearm()
        return txn

    def abandon(self, txn: ClientTransaction) -> None:
        """Give up ``txn`` without its final response (RFC 3261 §9.1: none came
        64*T1 after its CANCEL). Its owner is not told; the layer forgets it."""
        self._owners.pop(txn, None)
        self.dispatch(self.layer.transport_error(txn, self.now()))
        self._rearm()

    def send_stateless(self, message: Request | Response, flow: Flow) -> None:
        self.dispatch(self.layer.send_stateless(message, flow))

    # -- events --------------------------------------------------------------------------
    def dispatch(self, events: list[Event]) -> None:
        tu = self.tu
        assert tu is not None and self.sender is not None
        for ev in events:
            if isinstance(ev, Transmit):
                dest = ev.destination
                if TRACER.active and isinstance(dest, Flow):
                    TRACER.message("out", ev.data, dest.transport, dest.remote)
                ok = isinstance(dest, Flow) and self.sender.send(dest, ev.data)
                if not ok and ev.transaction is not None:
                    self.dispatch(self.layer.transport_error(ev.transaction, self.now()))
            elif isinstance(ev, RequestReceived):
                self._arrived[ev.transaction] = self.now()
                try:
                    tu.on_request(ev.transaction, ev.request)
                except Exception:  # a bug on the request path: answer it, never hang
                    self._handling_failed(ev.transaction, ev.request)
            elif isinstance(ev, CancelReceived):
                self._arrived[ev.transaction] = self.now()
                tu.on_cancel(ev.transaction, ev.request, ev.invite)
            elif isinstance(ev, AckReceived):
                if isinstance(ev.source, Flow):
                    tu.on_ack(ev.request, ev.source)
            elif isinstance(ev, ResponseReceived):
                if (owner := self._owners.get(ev.transaction)) is not None:
                    owner.on_response(ev.transaction, ev.response)
            elif isinstance(ev, StrayResponse):
                if isinstance(ev.source, Flow):
                    tu.on_stray_response(ev.response, ev.source)
            elif isinstance(ev, TransactionTimeout | TransportFailed):
                txn = ev.transaction
                if isinstance(txn, ClientTransaction) and (owner := self._owners.get(txn)):
                    owner.on_failure(txn, 408 if isinstance(ev, TransactionTimeout) else 503)
            elif isinstance(ev, TransactionTerminated):
                if isinstance(ev.transaction, ClientTransaction):
                    self._owners.pop(ev.transaction, None)
                elif isinstance(ev.transaction, ServerTransaction):
                    self._answer_listeners.pop(ev.transaction, None)  # never answered
                tu.on_terminated(ev.transaction)

    def _handling_failed(self, txn: ServerTransaction, request: Request) -> None:
        """The core raised while handling ``request``: log it, and answer 500 unless
        an answer went out already, so the sender is told at once instead of
        waiting out its timers."""
        log.exception("request handling failed", method=request.method)
        with contextlib.suppress(LocalProtocolError):  # already answered: it ends as it was
            self.respond(txn, 500, "Server Internal Error")

    # -- the one timer -------------------------------------------------------------------
    def _rearm(self) -> None:
        loop = self.scheduler
        if loop is None:
            return
        deadline = self.layer.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.dispatch(self.layer.handle_timers(self.now()))
        self._rearm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _stamp_via(req: Request, flow: Flow) -> None:
    """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via."""
    if req.headers.get("Via") is None:
        return
    try:
        via = req.top_via.copy()
    except RemoteProtocolError:
        return
    ip, port = flow.remote
    changed = False
    host = via.host.strip("[]")
    if host != ip or via.has_rport:
        via.params.set("received", ip if ":" not in ip else f"[{ip}]")
        changed = True
    if via.has_rport:
        via.params.set("rport", str(port))
        changed = True
    if changed:
        req.replace_top_via(via)
