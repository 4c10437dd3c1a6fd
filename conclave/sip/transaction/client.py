"""Client transactions (RFC 3261 §17.1) and the requests they build.

A :class:`ClientTransaction` runs the INVITE or the non-INVITE client table
of :mod:`.tables`. The TU creates the request (with a fresh ``z9hG4bK``
branch in its top Via, §8.1.1.7) and hands it to
:meth:`TransactionLayer.send_request`; the transaction sends it,
retransmits it, absorbs duplicate responses and ACKs non-2xx finals.

:func:`make_ack` builds the ACK of a 300-699 (§17.1.1.3), which the
transaction sends itself; :func:`make_cancel` builds a CANCEL (§9.1), which
the TU sends as a new client transaction.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, RemoteProtocolError
from ..headers import Headers
from ..message import Request, Response
from .base import Transaction
from .config import TimerConfig
from .events import (
    Event,
    ResponseReceived,
    TransactionTimeout,
    Transmit,
    TransportFailed,
)
from .matching import ClientKey, client_key
from .tables import INVITE_CLIENT, NON_INVITE_CLIENT, Effect, Input, Timer

DEFAULT_MAX_FORWARDS = "70"
"""Max-Forwards of the ACKs and CANCELs built here (§8.1.1.6)."""


def _response_input(status: int) -> Input:
    if 100 <= status < 200:
        return Input.RESPONSE_1XX
    if 200 <= status < 300:
        return Input.RESPONSE_2XX
    return Input.RESPONSE_FINAL


def _cseq_number(request: Request) -> int:
    if "CSeq" not in request.headers:
        raise LocalProtocolError("request has no CSeq header")
    try:
        return request.cseq.seq
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"request has a malformed CSeq: {exc.reason}") from None


def _copy_into(out: Headers, request: Request, *names: str) -> None:
    for name in names:
        for value in request.headers.get_all(name):
            out.add(name, value)


def make_ack(request: Request, response: Response) -> Request:
    """The ACK for a 300-699 response to ``request`` (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number (method ACK) as the
    INVITE; To from the response, with its tag; one Via, equal to the
    INVITE's top Via (so the ACK matches the server transaction); and the
    INVITE's Route header fields.
    """
    via = request.headers.get("Via")
    to = response.headers.get("To")
    if via is None or to is None:
        raise LocalProtocolError("make_ack needs a Via in the request and a To in the response")
    headers = Headers()
    headers.add("Via", via)
    _copy_into(headers, request, "Route")
    headers.add("Max-Forwards", DEFAULT_MAX_FORWARDS)
    _copy_into(headers, request, "From")
    headers.add("To", to)
    _copy_into(headers, request, "Call-ID")
    headers.add("CSeq", f"{_cseq_number(request)} ACK")
    return Request("ACK", request.uri, headers)


def make_cancel(request: Request) -> Request:
    """A CANCEL for ``request`` (RFC 3261 §9.1).

    Same Request-URI, Call-ID, To, From and CSeq number (method CANCEL) as
    the request, one Via equal to its top Via (same branch: the CANCEL
    reaches the same server transaction's element), and its Route header
    fields. Send it with ``layer.send_request`` to the same destination, and
    only once the INVITE transaction has received a provisional response
    (its state is Proceeding); before that §9.1 says wait.
    """
    if request.method == "ACK":
        raise LocalProtocolError("an ACK cannot be cancelled")
    via = request.headers.get("Via")
    if via is None:
        raise LocalProtocolError("make_cancel needs a request with a Via")
    headers = Headers()
    headers.add("Via", via)
    _copy_into(headers, request, "Route")
    headers.add("Max-Forwards", DEFAULT_MAX_FORWARDS)
    _copy_into(headers, request, "From", "To", "Call-ID")
    headers.add("CSeq", f"{_cseq_number(request)} CANCEL")
    return Request("CANCEL", request.uri, headers)


class ClientTransaction(Transaction):
    """An INVITE or non-INVITE client transaction (RFC 3261 §17.1).

    Create it through :meth:`TransactionLayer.send_request`, or directly and
    then call :meth:`start`. ``destination`` is opaque and comes back in each
    :class:`Transmit`.
    """

    def __init__(
        self,
        request: Request,
        destination: object,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
    ) -> None:
        if request.method == "ACK":
            raise LocalProtocolError(
                "ACK has no client transaction: send the ACK of a 2xx with "
                "layer.send_stateless (§13.2.2.4, §17.1.1.3)"
            )
        try:
            key = client_key(request)
            cseq = request.cseq
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot send this request: {exc.reason}") from None
        if not key[0].startswith("z9hG4bK") or len(key[0]) <= len("z9hG4bK"):
            raise LocalProtocolError(
                "the top Via branch must start with z9hG4bK and be unique (§8.1.1.7)"
            )
        if cseq.method != request.method:
            raise LocalProtocolError(f"CSeq method {cseq.method} is not {request.method}")
        table = INVITE_CLIENT if request.method == "INVITE" else NON_INVITE_CLIENT
        super().__init__(table, request, reliable=reliable, config=config or TimerConfig())
        self.destination = destination
        self.key: ClientKey = key
        self.last_response: Response | None = None
        """The last response passed to the TU."""
        self._data = request.serialise()
        self._ack: bytes | None = None

    @property
    def branch(self) -> str:
        return self.key[0]

    def receive_response(self, response: Response, now: float) -> list[Event]:
        """A response that matched this transaction (the layer matched it)."""
        return self._feed(_response_input(response.status), now, response)

    def _effect(
        self,
        effect: Effect,
        inp: Input,
        now: float,
        message: Request | Response | None,
        source: object,
        events: list[Event],
    ) -> None:
        if effect is Effect.SEND_REQUEST:
            events.append(Transmit(self._data, self.destination, self))
        elif effect is Effect.PASS_RESPONSE:
            assert isinstance(message, Response)
            self.last_response = message
            events.append(ResponseReceived(self, message))
        elif effect is Effect.SEND_ACK:
            assert isinstance(message, Response)
            if self._ack is None:
                # Built once from the first final: retransmissions of that
                # final are identical, and each gets the same ACK again.
                self._ack = make_ack(self.request, message).serialise()
            events.append(Transmit(self._ack, self.destination, self))
        elif effect is Effect.REPORT_TIMEOUT:
            events.append(TransactionTimeout(self, Timer[inp.name.removeprefix("TIMER_")]))
        elif effect is Effect.REPORT_TRANSPORT_ERROR:
            events.append(TransportFailed(self))
        else:  # pragma: no cover - the client tables use no other effect
            raise AssertionError(f"unexpected effect {effect}")
