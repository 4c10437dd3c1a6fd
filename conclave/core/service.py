"""The interface between the router and a feature service (presence, chat, ...).

A service is constructed and handed to the router only when the topology
enables it, so a disabled feature registers no handler and is absent from
Allow, Supported and Allow-Events (the wsproto rule in STYLE.md).
"""

from __future__ import annotations

from typing import Protocol

from conclave.sip.message import Request, Response
from conclave.sip.transaction import ClientTransaction, ServerTransaction
from conclave.transport.flow import Flow


class SipService(Protocol):
    """A feature module the router dispatches requests to."""

    name: str
    methods: frozenset[str]
    """Methods this service answers as a UAS (e.g. SUBSCRIBE, PUBLISH)."""
    event_packages: frozenset[str]
    """Event packages it serves, listed in Allow-Events (RFC 6665 §8.2.2)."""

    def handle(self, txn: ServerTransaction, request: Request, *, user: str, flow: Flow) -> None:
        """Answer ``request`` on ``txn``.

        The router calls this for an authenticated request from local user
        ``user`` (the From user), either out of dialog and addressed to a
        local address, or in a dialog whose Request-URI is this server. The
        service must answer ``txn`` (through the stack) exactly once.
        """

    def on_response(self, txn: ClientTransaction, response: Response) -> bool:
        """A response to a request this service sent; False if not its own."""

    def on_failure(self, txn: ClientTransaction, status: int) -> bool:
        """Its request timed out (408) or could not be sent (503); False if not its own."""
