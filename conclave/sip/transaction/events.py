"""Events the transaction layer hands back to its caller.

Every input method of a transaction or of the
:class:`~conclave.sip.transaction.layer.TransactionLayer` returns a list of
these, in the order they happened. The caller handles each one:

* :class:`Transmit` goes to the transport adapter, which sends ``data`` to
  ``destination`` (the opaque object the caller supplied) and, if sending
  fails, calls ``layer.transport_error(transaction, now)``;
* every other event goes to the transaction user (TU).

``destination`` and ``source`` are never looked into by the core: they are
whatever the adapter passed in (for example ``("udp", ("192.0.2.1", 5060))``)
and are handed back unchanged. For a server transaction, responses go to the
request's ``source``; working out the RFC 3261 §18.2.2 response address
(received, rport, maddr) from it is the adapter's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from ..message import Request, Response
from .tables import Timer

if TYPE_CHECKING:
    from .base import Transaction
    from .client import ClientTransaction
    from .server import ServerTransaction


@dataclass(frozen=True)
class Transmit:
    """Send ``data`` to ``destination``.

    ``transaction`` is the transaction that sent it (None for stateless
    sends), so that a send failure can be reported back with
    ``layer.transport_error(transaction, now)``.
    """

    data: bytes
    destination: object
    transaction: Transaction | None = None


@dataclass(frozen=True)
class RequestReceived:
    """A new request created ``transaction``; the TU must answer it.

    The TU answers with ``layer.send_response(transaction, response, now)``.
    For INVITE, a 100 Trying is sent for it if it stays silent (see
    :attr:`TimerConfig.trying_delay`). CANCEL never arrives this way: see
    :class:`CancelReceived`.
    """

    transaction: ServerTransaction
    request: Request


@dataclass(frozen=True)
class CancelReceived:
    """A new CANCEL request (RFC 3261 §9.2) created ``transaction``.

    ``invite`` is the live INVITE server transaction it cancels (matched as
    §9.2 says: like the INVITE's own retransmissions, but for the method),
    or None. The TU must answer ``transaction``: 481 when ``invite`` is None,
    otherwise 200, and then, if the INVITE has no final response yet, answer
    the INVITE with 487 (a UAS) or cancel its branches (a proxy, §16.10).
    """

    transaction: ServerTransaction
    request: Request
    invite: ServerTransaction | None


@dataclass(frozen=True)
class AckReceived:
    """An ACK that is not absorbed by a transaction: the ACK of a 2xx.

    RFC 3261 §17.2.3 / RFC 6026: the ACK of a 2xx is its own transaction-less
    request. ``transaction`` is the INVITE server transaction in Accepted
    that it matched (RFC 6026 §8.7), or None when it matched none (the usual
    case, because the UAC gives that ACK a new branch). A UAS core stops
    retransmitting its 2xx; a proxy forwards the ACK statelessly (§16.10).
    """

    request: Request
    source: object
    transaction: ServerTransaction | None


@dataclass(frozen=True)
class ResponseReceived:
    """A response for the TU, from ``transaction`` (RFC 3261 §17.1).

    Retransmitted responses are absorbed and never appear here, except that
    every 2xx to an INVITE does (RFC 6026 §7.2): the TU ACKs each 2xx.
    """

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True)
class StrayResponse:
    """A response that matched no client transaction (§17.1.3, §18.1.2).

    A UAC core drops it, except that a 2xx to INVITE may be a retransmission
    the TU must ACK again; a stateful proxy forwards it statelessly (RFC 3261
    §16.7 step 2 as amended by RFC 6026)."""

    response: Response
    source: object


@dataclass(frozen=True)
class TransactionTimeout:
    """``timer`` fired and ``transaction`` gave up.

    Timer B or F (client): the TU must act as if it had received a 408
    (§8.1.3.1, §16.8). Timer H (INVITE server): the ACK for a 300-699 never
    arrived (§17.2.1); the transaction is terminated and a dialog-creating TU
    may clean up.
    """

    transaction: Transaction
    timer: Timer


@dataclass(frozen=True)
class TransportFailed:
    """The adapter reported that sending for ``transaction`` failed.

    §8.1.3.1 / §17.1.4: a client TU treats this as a 503; §17.2.4: a server
    TU may retry the response at the next address in the §18.2.2 procedure.
    """

    transaction: Transaction


@dataclass(frozen=True)
class TransactionTerminated:
    """``transaction`` reached Terminated and was removed from the layer."""

    transaction: Transaction


@dataclass(frozen=True)
class Overloaded:
    """A new request was refused with 503 because the layer is full.

    The 503 (with Retry-After) is in a :class:`Transmit` just before this
    event; no transaction was created. Meant for logging and metrics."""

    request: Request
    source: object


Event: TypeAlias = (
    Transmit
    | RequestReceived
    | CancelReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransportFailed
    | TransactionTerminated
    | Overloaded
)
