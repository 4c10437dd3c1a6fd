"""Sending NOTIFYs: merging, fan-out, one in flight per subscription, termination.

Theory of operation
-------------------
A change to a presentity calls :meth:`Notifier.changed`, which walks the
subscriptions that include it (``PresenceState.watching``: O(watchers)),
marks the presentity *dirty* on each and queues the subscription for a
check at ``now + window`` unless it is already queued. Later changes inside
the window only add to the dirty set, so a burst of changes reaches each
watcher as one NOTIFY (for a contact list: one partial RLMI NOTIFY naming
every contact that changed). The window is constant, so the queue is a FIFO
already in deadline order: queueing is O(1), no heap.

When the check comes due, :meth:`Notifier.kick` asks
:class:`~.views.Views` for the subscription's document and sends a NOTIFY
only if the document differs from the last one sent (see the privacy rule
in :mod:`.views`). At most one NOTIFY per subscription is in flight
(RFC 6665 §4.2.2 asks notifiers not to race their own NOTIFYs): anything
that comes due meanwhile waits, merged, until the response arrives. A
full-state NOTIFY that is owed (initial, after a refresh) waits the same way.

**Building a NOTIFY.** Fan-out sends one NOTIFY per watcher, so the
per-NOTIFY work is kept small: everything a dialog's NOTIFYs repeat
(Request-URI, Route set, From, To, Call-ID, Contact, Event) is computed once
per subscription into a :class:`NotifyTemplate`, and each NOTIFY only adds
the fresh Via branch, CSeq, Subscription-State and its body. The result is an
ordinary :class:`~conclave.sip.message.Request` handed to the transaction
layer, which serialises it, retransmits it and times it out as any other.

Termination (:meth:`Notifier.terminate`) removes the subscription from the
state at once (no more fan-out) and sends the final NOTIFY
(``Subscription-State: terminated;reason=...``) when nothing is in flight.
A NOTIFY that fails -- any final response of 300 or more, a timeout, or a
transport failure -- removes the subscription without a final NOTIFY
(RFC 6665 §4.2.2: the subscriber is gone or does not want it).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import structlog

from conclave.core.stack import ClientCallbacks, ClientOwner
from conclave.sip.errors import LocalProtocolError
from conclave.sip.flow import Flow
from conclave.sip.headers import Headers
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request, Response
from conclave.sip.transaction import ClientTransaction
from conclave.sip.uri import URI

from .state import Kind, PresenceState, Subscription
from .views import WINFO_KEY, Document, Views

log = structlog.get_logger("conclave.services.presence")

PUMP_SLICE = 64
"""Checks (so at most NOTIFYs) per slice when :meth:`Notifier.pump` is asked to slice."""

BODY_REASONS = frozenset({"timeout"})
"""Final NOTIFYs that still carry the state (expiry, unsubscribe, a fetch);
the others (noresource, deactivated, rejected, giveup) carry none."""


class NotifyStack(Protocol):
    """The part of :class:`~conclave.core.stack.SipStack` the notifier uses."""

    def send_request(
        self, req: Request, flow: Flow, owner: ClientOwner | None = None
    ) -> ClientTransaction: ...


def server_contact(local: LocalEndpoint, flow: Flow) -> str:
    """Our Contact in subscription dialogs: refreshes come back to this server.

    The router hands in-dialog requests whose Request-URI ``local.is_me`` to
    the service that owns the method, so this URI names us as the
    subscriber reaches us (:meth:`LocalEndpoint.reach`: its outbound proxy's
    name and address, else our host and the port of its transport).
    """
    return f"<sip:presence@{local.reach(flow)}>"


Fields = tuple[tuple[str, str], ...]
"""Header fields in order, as ``(name, value)``."""


@dataclass(frozen=True, slots=True)
class NotifyTemplate:
    """The parts of a subscription's NOTIFYs that do not change from one to the next.

    Made from the dialog (RFC 6665 §4.3; RFC 3261 §12.2.1.1) and the transport
    of the subscriber's flow; :meth:`fits` says whether it still describes
    ``sub`` (a refresh may bring a new Contact, or arrive on another transport).
    """

    target: URI
    """The subscription's remote target this was made from (compared by identity)."""
    transport: str
    """The transport of the subscriber's flow: our Via names it."""
    flow: Flow
    """The subscriber's flow this was made for: our Contact names us as it reaches us."""
    uri: URI
    """Our own copy of the target: the Request-URI of every NOTIFY of the dialog."""
    before_cseq: Fields
    """Max-Forwards, the Route set, From, To, Call-ID."""
    after_cseq: Fields
    """Contact, Event."""
    after_state: Fields
    """After Subscription-State: Require (a list subscription), or nothing."""

    @classmethod
    def of(cls, sub: Subscription, local: LocalEndpoint) -> NotifyTemplate:
        transport = sub.flow.transport
        return cls(
            target=sub.target,
            transport=transport,
            flow=sub.flow,
            uri=sub.target.copy(),
            before_cseq=(
                ("Max-Forwards", "70"),
                *(("Route", route) for route in sub.route_set),
                ("From", sub.local),
                ("To", sub.remote),
                ("Call-ID", sub.key[0]),
            ),
            after_cseq=(("Contact", server_contact(local, sub.flow)), ("Event", sub.event)),
            after_state=(("Require", "eventlist"),) if sub.kind is Kind.LIST else (),
        )

    def fits(self, sub: Subscription) -> bool:
        """Still right for ``sub``: a refresh replaces the target (never edits it in place)."""
        return self.target is sub.target and self.flow == sub.flow


class Notifier:
    """Builds and sends every NOTIFY; tracks the one in flight per subscription."""

    def __init__(
        self,
        *,
        stack: NotifyStack,
        local: LocalEndpoint,
        state: PresenceState,
        views: Views,
        window: float,
        clock: Callable[[], float],
        new_branch: Callable[[], str],
        on_schedule: Callable[[float], None] = lambda at: None,
    ) -> None:
        self.stack = stack
        self.local = local
        self.state = state
        self.views = views
        self.window = window
        self.clock = clock
        self.new_branch = new_branch
        self.on_schedule = on_schedule
        self._queue: collections.deque[tuple[float, Subscription]] = collections.deque()
        self._txns: dict[ClientTransaction, Subscription] = {}
        self.sent = 0

    # -- changes ---------------------------------------------------------------------------
    def changed(self, aor: str, now: float) -> int:
        """``aor``'s state changed: queue a check for every subscription including it."""
        subs = self.state.watching(aor)
        for sub in subs:
            sub.dirty.add(aor)
            self._enqueue(sub, now)
        return len(subs)

    def winfo_changed(self, owner: str, now: float) -> None:
        """The watchers of ``owner`` changed: queue a check for their winfo subscribers."""
        for sub in self.state.winfo(owner):
            sub.dirty.add(WINFO_KEY)
            self._enqueue(sub, now)

    def recheck(self, sub: Subscription, resources: frozenset[str], now: float) -> None:
        """Queue a check of ``sub`` for ``resources`` (a privacy rule may have changed)."""
        sub.dirty.update(resources)
        self._enqueue(sub, now)

    def _enqueue(self, sub: Subscription, now: float) -> None:
        if sub.queued or sub.closing is not None:
            return
        sub.queued = True
        at = now + self.window
        self._queue.append((at, sub))
        self.on_schedule(at)

    def next_deadline(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def pump(self, now: float, limit: int | None = None) -> bool:
        """Run the merge-window checks that are due: all of them, or at most ``limit``.

        Returns True if some are still due. An adapter that passes a limit
        (:data:`PUMP_SLICE`) yields to its event loop and calls again, so that
        a fan-out to thousands of watchers goes out in slices with other
        traffic served in between, instead of in one long loop turn.
        """
        queue = self._queue
        left = -1 if limit is None else limit
        while left != 0 and queue and queue[0][0] <= now:
            left -= 1
            _, sub = queue.popleft()
            sub.queued = False
            self.kick(sub)
        return bool(queue) and queue[0][0] <= now

    # -- sending ---------------------------------------------------------------------------
    def notify_full(self, sub: Subscription) -> None:
        """Send a full-state NOTIFY now, or as soon as the one in flight is answered."""
        sub.full_due = True
        self.kick(sub)

    def terminate(self, sub: Subscription, reason: str) -> None:
        """End ``sub``: no more fan-out, then the final NOTIFY with ``reason``."""
        if sub.closing is not None:
            return
        if self.state.subscription(sub.key) is sub:
            self.state.remove_subscription(sub.key)
        sub.closing = reason
        log.info(
            "subscription terminated", watcher=sub.watcher, resource=sub.resource, reason=reason
        )
        self._watchers_changed(sub)
        self.kick(sub)

    def kick(self, sub: Subscription) -> None:
        """Send whatever ``sub`` is owed, unless a NOTIFY of it is in flight."""
        if sub.inflight is not None or sub.final_sent:
            return
        if sub.closing is not None:
            sub.final_sent = True
            doc = (
                self.views.document(sub, full=True)
                if sub.closing in BODY_REASONS
                else Document(None, b"")
            )
            self._send(sub, f"terminated;reason={sub.closing}", doc or Document(None, b""))
            return
        full = sub.full_due
        doc = self.views.document(sub, full=full)
        sub.full_due = False
        sub.dirty.clear()
        if doc is None:
            return
        now = self.clock()
        remaining = max(1, round(sub.expires_at - now))
        value = f"{'pending' if sub.pending else 'active'};expires={remaining}"
        self._send(sub, value, doc)

    def _send(self, sub: Subscription, subscription_state: str, doc: Document) -> None:
        request = self._build(sub, subscription_state, doc)
        owner = ClientCallbacks(partial(self._answered, sub), partial(self._failed, sub))
        try:
            txn = self.stack.send_request(request, sub.flow, owner)
        except LocalProtocolError as exc:
            log.warning("NOTIFY not sent", watcher=sub.watcher, reason=str(exc))
            self._drop(sub, "not sent")
            return
        self.sent += 1
        sub.sent.update(doc.sent)
        if doc.version is not None:
            sub.version = doc.version
        if txn.terminated:
            # The transport refused it at once (the connection is gone): the
            # failure has been reported to _failed, which dropped the subscription.
            return
        sub.inflight = txn
        self._txns[txn] = sub

    def _build(self, sub: Subscription, subscription_state: str, doc: Document) -> Request:
        template = sub.template
        if template is None or not template.fits(sub):
            template = sub.template = NotifyTemplate.of(sub, self.local)
        sub.local_cseq += 1
        content_type: Fields = (
            () if doc.content_type is None else (("Content-Type", doc.content_type),)
        )
        headers = Headers(
            (
                ("Via", self.local.via(template.flow, self.new_branch())),
                *template.before_cseq,
                ("CSeq", f"{sub.local_cseq} NOTIFY"),
                *template.after_cseq,
                ("Subscription-State", subscription_state),
                *template.after_state,
                *content_type,
            )
        )
        return Request("NOTIFY", template.uri, headers, doc.body)

    # -- outcomes: each NOTIFY's transaction is owned by its subscription ----------------------
    def _answered(self, sub: Subscription, txn: ClientTransaction, response: Response) -> None:
        if response.status < 200:
            return
        self._txns.pop(txn, None)
        if sub.inflight is txn:
            sub.inflight = None
        if response.status >= 300:
            self._drop(sub, f"NOTIFY answered {response.status}")
        else:
            self.kick(sub)

    def _failed(self, sub: Subscription, txn: ClientTransaction, status: int) -> None:
        self._txns.pop(txn, None)
        if sub.inflight is txn:
            sub.inflight = None
        self._drop(sub, "NOTIFY timed out" if status == 408 else "NOTIFY could not be sent")

    def _drop(self, sub: Subscription, why: str) -> None:
        sub.final_sent = True
        if sub.closing is not None:
            return
        sub.closing = "giveup"
        if self.state.subscription(sub.key) is sub:
            self.state.remove_subscription(sub.key)
        log.info("subscription dropped", watcher=sub.watcher, resource=sub.resource, reason=why)
        self._watchers_changed(sub)

    def _watchers_changed(self, sub: Subscription) -> None:
        now = self.clock()
        for owner in sub.resources:
            self.winfo_changed(owner, now)

    def in_flight(self) -> int:
        return len(self._txns)
