"""The interface between the router and a feature service (presence, chat, ...).

A service is constructed and handed to the router only when the topology
enables it, so a disabled feature registers no handler and is absent from
Allow, Supported and Allow-Events (the wsproto rule in STYLE.md).
"""

from __future__ import annotations

from typing import Protocol

from conclave.sip.flow import Flow
from conclave.sip.message import Request
from conclave.sip.transaction import ServerTransaction


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
