"""Server transactions (RFC 3261 §17.2).

A :class:`ServerTransaction` runs the INVITE or the non-INVITE server table
of :mod:`.tables`. The layer creates it when a new request arrives and feeds
it the request's retransmissions and (for INVITE) the ACK; the TU sends its
responses through it with :meth:`TransactionLayer.send_response`.

Responses are sent to the request's ``source``. Retransmitted requests make
the transaction re-send its last response (or nothing, in a non-INVITE
Trying state); Timer G retransmits a 300-699 to INVITE until the ACK
arrives. A 2xx to INVITE moves to Accepted (RFC 6026): from then on the TU
retransmits the 2xx itself (§13.3.1.4) by sending it again through the
transaction, which forwards each 2xx until Timer L fires.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, RemoteProtocolError
from ..message import Request, Response, make_response
from .base import Transaction
from .config import TimerConfig
from .events import AckReceived, Event, TransactionTimeout, Transmit, TransportFailed
from .matching import ServerKey, server_key, to_tag
from .tables import INVITE_SERVER, NON_INVITE_SERVER, Effect, Input, Timer


def _tu_input(status: int) -> Input:
    if 100 <= status < 200:
        return Input.TU_1XX
    if 200 <= status < 300:
        return Input.TU_2XX
    if 300 <= status < 700:
        return Input.TU_FINAL
    raise LocalProtocolError(f"status {status} is not 100-699")


class ServerTransaction(Transaction):
    """An INVITE or non-INVITE server transaction (RFC 3261 §17.2).

    Usually created by :class:`~conclave.sip.transaction.layer.TransactionLayer`.
    For standalone use, construct it and call :meth:`start`. ``source`` is
    opaque; responses are transmitted to it.
    """

    def __init__(
        self,
        request: Request,
        source: object,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
        key: ServerKey | None = None,
    ) -> None:
        if request.method == "ACK":
            raise LocalProtocolError("an ACK never creates a server transaction (§17.2.3)")
        table = INVITE_SERVER if request.method == "INVITE" else NON_INVITE_SERVER
        super().__init__(table, request, reliable=reliable, config=config or TimerConfig())
        self.source = source
        self.key: ServerKey = key if key is not None else server_key(request)
        self.last_response: Response | None = None
        """The last response sent (what a retransmitted request gets again)."""
        self.response_to_tag: str | None = None
        """The To tag of the last response sent; an RFC 2543 ACK must carry it."""
        self._last_data: bytes | None = None

    @property
    def last_data(self) -> bytes | None:
        """The bytes of the last response sent (what a retransmission gets)."""
        return self._last_data

    # -- inputs ------------------------------------------------------------------
    def receive_request(self, request: Request, source: object, now: float) -> list[Event]:
        """A retransmission of the request, or (INVITE) an ACK, matched to us."""
        inp = Input.ACK if request.method == "ACK" else Input.REQUEST
        return self._feed(inp, now, request, source)

    def send_response(self, response: Response, now: float) -> list[Event]:
        """Send the TU's ``response`` (RFC 3261 §17.2.1, §17.2.2).

        Raises LocalProtocolError if the state does not allow it: a second
        final response, a provisional after the final, a response for another
        method, or anything after Terminated. The transaction is unchanged
        then.
        """
        inp = _tu_input(response.status)
        try:
            method: str | None = response.cseq.method
        except RemoteProtocolError:  # missing or malformed
            method = None
        if method != self.method:
            value = response.headers.get("CSeq")
            raise LocalProtocolError(f"response CSeq {value!r} does not answer a {self.method}")
        return self._feed(inp, now, response)

    # -- effects -----------------------------------------------------------------
    def _effect(
        self,
        effect: Effect,
        inp: Input,
        now: float,
        message: Request | Response | None,
        source: object,
        events: list[Event],
    ) -> None:
        if effect is Effect.SEND_RESPONSE:
            assert isinstance(message, Response)
            self._send(message, events)
        elif effect is Effect.RESEND_RESPONSE:
            if self._last_data is not None:
                events.append(Transmit(self._last_data, self.source, self))
        elif effect is Effect.SEND_TRYING:
            self._send(self._trying(), events)
        elif effect is Effect.PASS_ACK:
            assert isinstance(message, Request)
            events.append(AckReceived(message, source, self))
        elif effect is Effect.REPORT_TIMEOUT:
            events.append(TransactionTimeout(self, Timer[inp.name.removeprefix("TIMER_")]))
        elif effect is Effect.REPORT_TRANSPORT_ERROR:
            events.append(TransportFailed(self))
        else:  # pragma: no cover - the server tables use no other effect
            raise AssertionError(f"unexpected effect {effect}")

    def _send(self, response: Response, events: list[Event]) -> None:
        self.last_response = response
        self._last_data = response.serialise()
        if response.status >= 200:
            try:
                self.response_to_tag = to_tag(response)
            except RemoteProtocolError:
                self.response_to_tag = None
        events.append(Transmit(self._last_data, self.source, self))

    def _trying(self) -> Response:
        """The 100 Trying of §17.2.1, with the Timestamp echoed (§8.2.6.1)."""
        timestamp = self.request.headers.get("Timestamp")
        extra = (("Timestamp", timestamp),) if timestamp is not None else ()
        return make_response(self.request, 100, headers=extra)
