"""The SIP transaction layer (RFC 3261 §17, with RFC 6026), sans-IO.

Bytes never appear here as input: the adapter parses messages and passes
:class:`~conclave.sip.message.Request` / :class:`~conclave.sip.message.Response`
objects plus ``now`` (seconds) to a :class:`TransactionLayer`, and gets back
lists of events: :class:`Transmit` for the transport, everything else for
the transaction user. No clock is read; :meth:`TransactionLayer.next_deadline`
says when to call :meth:`TransactionLayer.handle_timers`.

The state machines are tables in :mod:`.tables`, whose docstring is the
theory of operation. Once a transaction belongs to a layer, drive it only
through the layer, so that the layer's timer heap stays in step.
"""

from .base import Transaction
from .client import ClientTransaction, make_ack, make_cancel
from .config import TimerConfig
from .events import (
    AckReceived,
    CancelReceived,
    Event,
    Overloaded,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
    TransportFailed,
)
from .layer import MAX_TRANSACTIONS, RETRY_AFTER_SECONDS, TransactionLayer, TransactionLimitError
from .matching import ClientKey, ServerKey, client_key, server_key
from .server import ServerTransaction
from .tables import State, Timer

__all__ = [
    "MAX_TRANSACTIONS",
    "RETRY_AFTER_SECONDS",
    "AckReceived",
    "CancelReceived",
    "ClientKey",
    "ClientTransaction",
    "Event",
    "Overloaded",
    "RequestReceived",
    "ResponseReceived",
    "ServerKey",
    "ServerTransaction",
    "State",
    "StrayResponse",
    "Timer",
    "TimerConfig",
    "Transaction",
    "TransactionLayer",
    "TransactionLimitError",
    "TransactionTerminated",
    "TransactionTimeout",
    "Transmit",
    "TransportFailed",
    "client_key",
    "make_ack",
    "make_cancel",
    "server_key",
]
