"""One info log line per instant message and per call, for a person watching the log.

The registrar logs each REGISTER (``register``); this feature adds the rest
of what users do, from the ACCEPTED hook, when the outcome is known
(:meth:`~conclave.core.features.Exchange.when_answered`):

=============  ===============================================================
event          when, and its fields
=============  ===============================================================
``message``    a MESSAGE got its final response: ``from``, ``to``, ``status``
               and ``outcome``: ``delivered`` (2xx), ``stored`` (202: held
               for an offline recipient) or ``refused`` (3xx-6xx)
``call``       an INVITE that starts a call got its final response: ``from``,
               ``to``, ``status`` and ``outcome``: ``set up`` (2xx),
               ``cancelled`` (487) or ``failed``
``call ended`` a BYE was answered: ``from`` (who hung up), ``to``, ``status``
=============  ===============================================================

Each line also carries ``call_id`` (and, as every line written while a
request is handled, the authenticated ``user``). Bodies are never logged:
not the text of a message, not a call's SDP. The lines are written at
``info``: ``[logging] level = "warning"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from conclave.core.features import ACCEPTED, Exchange, Feature, FeatureHost
from conclave.sip.message import Response

if TYPE_CHECKING:
    from .setup import Setup

log = structlog.get_logger("conclave.activity")


def message_outcome(status: int) -> str:
    if status == 202:
        return "stored"
    return "delivered" if 200 <= status < 300 else "refused"


def call_outcome(status: int) -> str:
    if 200 <= status < 300:
        return "set up"
    return "cancelled" if status == 487 else "failed"


class ActivityLog(Feature):
    """Logs messages and calls (``message``, ``call``, ``call ended``) at info."""

    name = "activity"

    def register(self, host: FeatureHost) -> None:
        host.registry.hook(ACCEPTED, self.accepted)

    def accepted(self, exchange: Exchange) -> None:
        method = exchange.method
        if method == "MESSAGE":
            self._when_answered(exchange, "message", message_outcome)
        elif method == "INVITE" and not exchange.in_dialog:
            self._when_answered(exchange, "call", call_outcome)
        elif method == "BYE" and exchange.in_dialog:
            self._when_answered(exchange, "call ended", None)

    def _when_answered(
        self, exchange: Exchange, event: str, outcome: Callable[[int], str] | None
    ) -> None:
        request = exchange.request
        fields = {
            "from": exchange.sender,
            "to": exchange.target or request.to_aor or "",
            "call_id": request.call_id or "",
        }

        def answered(response: Response) -> None:
            extra = {} if outcome is None else {"outcome": outcome(response.status)}
            log.info(event, **fields, status=response.status, **extra)

        exchange.when_answered(answered)


def build(setup: Setup) -> ActivityLog:
    """Always on: one log line per message and call (at ``info``)."""
    return ActivityLog()
