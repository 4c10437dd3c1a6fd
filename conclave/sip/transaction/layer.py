"""The transaction layer: every live transaction, message matching, one timer.

:class:`TransactionLayer` sits between the transport adapter and the TU
(RFC 3261 §17). The adapter parses each message and calls
:meth:`~TransactionLayer.receive_request` or
:meth:`~TransactionLayer.receive_response`; the TU sends with
:meth:`~TransactionLayer.send_request` and
:meth:`~TransactionLayer.send_response`. Every call returns a list of
events (:mod:`.events`) to act on, in order.

Timers: the adapter keeps a single loop timer. After handling any call it
re-arms that timer for :meth:`~TransactionLayer.next_deadline`, and when it
fires calls :meth:`~TransactionLayer.handle_timers`. Deadlines live in a
heap with lazy deletion, so both are O(log n) amortised, not a scan of
every transaction.

A minimal asyncio adapter (the shape only; it lives outside ``conclave.sip``)::

    def on_datagram(data, addr):
        msg = parse_message(data)            # RemoteProtocolError: log and drop
        handler = layer.receive_request if isinstance(msg, Request) else layer.receive_response
        dispatch(handler(msg, ("udp", addr), loop.time()))

    def on_timer():
        dispatch(layer.handle_timers(loop.time()))

    def dispatch(events):
        for event in events:
            if isinstance(event, Transmit):
                send(event)                  # on failure: dispatch(layer.transport_error(...))
            else:
                tu.handle(event)             # may call layer.send_response(...) -> dispatch
        rearm()

    def rearm():
        nonlocal handle
        if handle is not None:
            handle.cancel()
        deadline = layer.next_deadline()
        handle = loop.call_at(deadline, on_timer) if deadline is not None else None
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
from dataclasses import dataclass

from ..errors import LocalProtocolError
from ..message import Request, Response, make_response
from .base import Transaction
from .client import ClientTransaction
from .config import TimerConfig
from .events import (
    AckReceived,
    CancelReceived,
    Event,
    Overloaded,
    RequestReceived,
    StrayResponse,
    TransactionTerminated,
    Transmit,
)
from .matching import (
    AckKey,
    ClientKey,
    ServerKey,
    ack_key,
    client_key,
    is_reliable,
    server_key,
    to_tag,
    top_via,
)
from .server import ServerTransaction
from .tables import State

MAX_TRANSACTIONS = 32_768
"""Most live server transactions, and separately most live client ones.

A live transaction is one the TU still works on (or, for INVITE, one that
waits for its ACK): each holds the request and its responses (a few KiB), so
a full table costs on the order of 100-200 MiB, bounded where an unbounded
table is a memory-exhaustion attack away. Beyond it new requests get a
stateless 503. A non-INVITE server transaction that has answered over UDP is
not live: it is kept as a :class:`_Completed` record (below), so this count
is reached only by work in progress, long after the CPU is saturated."""

MAX_COMPLETED_BYTES = 64 * 1024 * 1024
"""Memory for answered non-INVITE server transactions over UDP (RFC 3261
§17.2.2 Completed: they absorb retransmitted requests for 64*T1 = 32 s,
Timer J). Each is kept as its key, its source and the response bytes, about
1 KiB, so 64 MiB holds some 60,000: 2,000 answers a second for 32 s, twice
what one process can serve. Beyond it the oldest is forgotten early, and a
retransmission that comes later still is handled as a new request."""

COMPLETED_OVERHEAD = 256
"""Bytes a :class:`_Completed` record costs beyond its response: the key
tuple, the record, its dictionary and queue slots (measured with
sys.getsizeof, rounded up)."""

RETRY_AFTER_SECONDS = 5
"""Retry-After of the 503 sent when the table is full (RFC 3261 §21.5.4):
long enough for about 5 s of Timer J/K expiries to free room."""

_HEAP_SLACK = 64
"""Stale heap entries tolerated before compaction (beyond 2x the live ones)."""


@dataclass(slots=True, eq=False)
class _Completed:
    """What an answered non-INVITE server transaction over UDP still needs:
    the bytes to send again to a retransmitted request, and until when."""

    key: ServerKey
    source: object
    data: bytes
    expires: float


class TransactionLimitError(LocalProtocolError):
    """send_request was refused: MAX_TRANSACTIONS client transactions are live.

    The TU should answer the request that caused it with 503 (a proxy,
    §16.7) or report failure to its user."""


def _stateless_tag(request: Request) -> str:
    """A To tag that is the same for every retransmission of ``request`` (§8.2.7)."""
    parts = (
        request.headers.get("Call-ID") or "",
        request.headers.get("From") or "",
        request.headers.get("CSeq") or "",
        request.headers.get("Via") or "",
    )
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


class TransactionLayer:
    """Owns every live transaction; matches messages and multiplexes timers."""

    def __init__(
        self,
        config: TimerConfig | None = None,
        *,
        max_transactions: int = MAX_TRANSACTIONS,
        retry_after: int = RETRY_AFTER_SECONDS,
        max_completed_bytes: int = MAX_COMPLETED_BYTES,
    ) -> None:
        self.config = config or TimerConfig()
        self.max_transactions = max_transactions
        self.retry_after = retry_after
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._clients: dict[ClientKey, ClientTransaction] = {}
        # Answered non-INVITE server transactions over UDP, oldest first (all
        # live 64*T1 from completion, so insertion order is expiry order).
        self._completed: dict[ServerKey, _Completed] = {}
        self._completed_order: collections.deque[_Completed] = collections.deque()
        self.completed_bytes = 0
        self.max_completed_bytes = max_completed_bytes
        self.completed_evicted = 0
        """Records forgotten before Timer J because of :data:`MAX_COMPLETED_BYTES`."""
        self._acks_2543: dict[AckKey, list[ServerTransaction]] = {}
        # Timer multiplexing: _armed holds the one deadline that counts for
        # each transaction; the heap may also hold stale entries, which are
        # skipped when popped (lazy deletion) and compacted when too many.
        self._armed: dict[Transaction, float] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()

    # -- inspection --------------------------------------------------------------
    @property
    def server_count(self) -> int:
        return len(self._servers)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    @property
    def completed_count(self) -> int:
        """Answered non-INVITE server transactions over UDP still absorbing
        retransmissions (not counted as live)."""
        return len(self._completed)

    def __len__(self) -> int:
        return len(self._servers) + len(self._clients)

    # -- from the network ----------------------------------------------------------
    def receive_request(
        self, request: Request, source: object, now: float, *, reliable: bool | None = None
    ) -> list[Event]:
        """Handle a request from the network (RFC 3261 §17.2.3).

        ``reliable`` is whether it came over a reliable transport; None means
        "judge by the top Via transport". The request should have passed
        :func:`conclave.sip.validate.check_request`'s header checks: if a
        header the matching needs (Via, CSeq, To, From) is missing or
        malformed, RemoteProtocolError is raised and nothing changes.

        Returns, depending on the match: nothing or a :class:`Transmit` (a
        retransmission absorbed), :class:`RequestReceived` /
        :class:`CancelReceived` (a new transaction for the TU),
        :class:`AckReceived` (the ACK of a 2xx), or a 503 and
        :class:`Overloaded` (the table is full).
        """
        if request.method == "ACK":
            return self._receive_ack(request, source, now)
        key = server_key(request)
        if self._completed:
            self._expire_completed(now)
            done = self._completed.get(key)
            if done is not None:
                # A retransmission of a request we answered (§17.2.2): the
                # same response again, to where the request came from.
                return [Transmit(done.data, source, None)]
        existing = self._servers.get(key)
        if existing is not None:
            return self._after(existing, existing.receive_request(request, source, now))
        if len(self._servers) >= self.max_transactions:
            return self._overloaded(request, source)
        invite: ServerTransaction | None = None
        if request.method == "CANCEL":
            invite = self._servers.get(server_key(request, method="INVITE"))
        if reliable is None:
            reliable = is_reliable(top_via(request))
        txn = ServerTransaction(request, source, reliable=reliable, config=self.config, key=key)
        ack_index = None if key[0] == "3261" or not txn.is_invite else ack_key(request)
        self._servers[key] = txn
        if ack_index is not None:
            self._acks_2543.setdefault(ack_index, []).append(txn)
        events = txn.start(now)
        if request.method == "CANCEL":
            events.append(CancelReceived(txn, request, invite))
        else:
            events.append(RequestReceived(txn, request))
        return self._after(txn, events)

    def _receive_ack(self, ack: Request, source: object, now: float) -> list[Event]:
        key = server_key(ack)
        txn: ServerTransaction | None = None
        if key[0] == "3261":
            txn = self._servers.get(key)
        else:
            tag = to_tag(ack)
            for candidate in self._acks_2543.get(ack_key(ack), ()):
                if candidate.response_to_tag == tag:
                    txn = candidate
                    break
        if txn is None:
            # The ACK of a 2xx: its own transaction-less request (§17.2.3).
            return [AckReceived(ack, source, None)]
        return self._after(txn, txn.receive_request(ack, source, now))

    def receive_response(self, response: Response, source: object, now: float) -> list[Event]:
        """Handle a response from the network (RFC 3261 §17.1.3).

        Returns :class:`ResponseReceived` (and maybe the ACK of a 300-699 in a
        :class:`Transmit`), nothing (a retransmission absorbed), or
        :class:`StrayResponse` (also for a response to a request sent over a
        connection that arrives from any other ``source``). A 2xx to INVITE is
        never dropped silently: if its transaction is gone or in Completed it
        comes back as a stray, so the TU can ACK or forward it. Raises
        RemoteProtocolError if the top Via or CSeq is missing or malformed.
        """
        txn = self._clients.get(client_key(response))
        if txn is None or (txn.reliable and source != txn.destination):
            # §18.1.2: over a connection, the response comes back on the
            # connection the request went out on. One from elsewhere that
            # names our branch is not this transaction's: it is stray.
            return [StrayResponse(response, source)]
        events = txn.receive_response(response, now)
        if (
            not events
            and txn.is_invite
            and 200 <= response.status < 300
            and txn.state is not State.ACCEPTED
        ):
            events = [StrayResponse(response, source)]
        return self._after(txn, events)

    def transport_error(self, transaction: Transaction, now: float) -> list[Event]:
        """The adapter failed to send a :class:`Transmit` of ``transaction``.

        Reports :class:`TransportFailed` and usually terminates it
        (§17.1.4, §17.2.4). A transaction already gone is ignored.
        """
        if not self._owns(transaction):
            return []
        return self._after(transaction, transaction.transport_error(now))

    # -- from the TU ---------------------------------------------------------------
    def send_request(
        self, request: Request, destination: object, now: float, *, reliable: bool
    ) -> tuple[ClientTransaction, list[Event]]:
        """Start a client transaction for ``request`` and send it (§17.1).

        The TU has built the request, with a unique ``z9hG4bK`` branch in its
        top Via (§8.1.1.7) and the CSeq method equal to the method. The
        events carry its first :class:`Transmit`. Keep the transaction to
        recognise its ResponseReceived / TransactionTimeout events.

        Raises LocalProtocolError for an ACK (use :meth:`send_stateless`), a
        missing or non-RFC 3261 branch, or a branch and method already in
        use; TransactionLimitError when the client table is full.
        """
        txn = ClientTransaction(request, destination, reliable=reliable, config=self.config)
        if txn.key in self._clients:
            raise LocalProtocolError(f"branch {txn.branch} is already in use for {txn.method}")
        if len(self._clients) >= self.max_transactions:
            raise TransactionLimitError("too many client transactions")
        self._clients[txn.key] = txn
        return txn, self._after(txn, txn.start(now))

    def send_response(
        self, transaction: ServerTransaction, response: Response, now: float
    ) -> list[Event]:
        """Send the TU's ``response`` on ``transaction`` (§17.2.1, §17.2.2).

        Raises LocalProtocolError if the transaction is no longer live or its
        state does not allow this response (see
        :meth:`ServerTransaction.send_response`). After Terminated, a UAS core
        that still retransmits a 2xx uses :meth:`send_stateless`.
        """
        if not self._owns(transaction):
            raise LocalProtocolError(f"{transaction!r} is not live in this layer")
        return self._after(transaction, transaction.send_response(response, now))

    def send_final_once(
        self, transaction: ServerTransaction, response: Response, now: float
    ) -> list[Event]:
        """Send a final ``response`` once and end ``transaction`` at once.

        RFC 3261 §26.3.2.4: a challenge (401/407) to a request whose source
        has not been authenticated is sent "forgoing the normal response
        retransmission algorithm, and thus behaving statelessly": over UDP a
        forged source must not make us retransmit to a victim (Timer G) or
        hold state for it (Timer H). A retransmitted request starts afresh.
        Raises LocalProtocolError as :meth:`send_response` does, and for a
        provisional response.
        """
        if response.status < 200:
            raise LocalProtocolError("only a final response can be sent once")
        events = self.send_response(transaction, response, now)
        if self._owns(transaction):
            self._forget(transaction)
            events.append(TransactionTerminated(transaction))
        return events

    def send_stateless(self, message: Request | Response, destination: object) -> list[Event]:
        """Send ``message`` outside any transaction.

        For the ACK of a 2xx (§13.2.2.4), 2xx retransmissions by a UAS core
        after its transaction ended (§13.3.1.4), and anything a proxy
        forwards statelessly (§16.11). No retransmission, no matching.
        """
        return [Transmit(message.serialise(), destination, None)]

    # -- timers ----------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest deadline of any transaction, or None. Re-arm the loop timer."""
        heap = self._heap
        while heap:
            deadline, _, txn = heap[0]
            if self._armed.get(txn) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timers(self, now: float) -> list[Event]:
        """Fire every timer due at or before ``now``, across all transactions."""
        self._expire_completed(now)
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, txn = heapq.heappop(heap)
            if self._armed.get(txn) != deadline:
                continue  # stale: re-armed or terminated since
            del self._armed[txn]
            events += self._after(txn, txn.handle_timer(now))
        return events

    # -- bookkeeping -------------------------------------------------------------------
    def _owns(self, txn: Transaction) -> bool:
        if isinstance(txn, ServerTransaction):
            return self._servers.get(txn.key) is txn
        if isinstance(txn, ClientTransaction):
            return self._clients.get(txn.key) is txn
        return False

    def _after(self, txn: Transaction, events: list[Event]) -> list[Event]:
        """Reschedule ``txn`` after an input, or forget it if it terminated."""
        if txn.terminated:
            self._forget(txn)
            return events
        deadline = txn.next_deadline()
        if (
            deadline is not None
            and isinstance(txn, ServerTransaction)
            and txn.state is State.COMPLETED
            and not txn.is_invite
            and not txn.reliable
        ):
            return self._keep_completed(txn, deadline, events)
        if deadline is None:
            self._armed.pop(txn, None)
        elif self._armed.get(txn) != deadline:
            self._armed[txn] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), txn))
            if len(self._heap) > 2 * len(self._armed) + _HEAP_SLACK:
                self._compact()
        return events

    def _keep_completed(
        self, txn: ServerTransaction, expires: float, events: list[Event]
    ) -> list[Event]:
        """Trade an answered non-INVITE UDP transaction for a :class:`_Completed`
        record: all Completed does is answer retransmissions (Timer J), and
        the TU is told it has ended, so it frees what it kept for it."""
        data = txn.last_data
        self._forget(txn)
        if data is not None:
            record = _Completed(txn.key, txn.source, data, expires)
            self._completed[txn.key] = record
            self._completed_order.append(record)
            self.completed_bytes += len(data) + COMPLETED_OVERHEAD
            while self.completed_bytes > self.max_completed_bytes and self._completed_order:
                self._drop_completed(self._completed_order.popleft())
                self.completed_evicted += 1
        events.append(TransactionTerminated(txn))
        return events

    def _expire_completed(self, now: float) -> None:
        order = self._completed_order
        while order and order[0].expires <= now:
            self._drop_completed(order.popleft())

    def _drop_completed(self, record: _Completed) -> None:
        if self._completed.get(record.key) is record:
            del self._completed[record.key]
        self.completed_bytes -= len(record.data) + COMPLETED_OVERHEAD

    def _compact(self) -> None:
        self._heap = [(d, next(self._seq), txn) for txn, d in self._armed.items()]
        heapq.heapify(self._heap)

    def _forget(self, txn: Transaction) -> None:
        self._armed.pop(txn, None)
        if isinstance(txn, ServerTransaction):
            if self._servers.get(txn.key) is txn:
                del self._servers[txn.key]
            if txn.key[0] != "3261" and txn.is_invite:
                index = ack_key(txn.request)
                peers = [t for t in self._acks_2543.get(index, ()) if t is not txn]
                if peers:
                    self._acks_2543[index] = peers
                else:
                    self._acks_2543.pop(index, None)
        elif isinstance(txn, ClientTransaction) and self._clients.get(txn.key) is txn:
            del self._clients[txn.key]

    def _overloaded(self, request: Request, source: object) -> list[Event]:
        """A stateless 503 with Retry-After (§21.5.4) when the table is full."""
        response = make_response(
            request,
            503,
            to_tag=_stateless_tag(request),
            headers=(("Retry-After", str(self.retry_after)),),
        )
        return [Transmit(response.serialise(), source, None), Overloaded(request, source)]
