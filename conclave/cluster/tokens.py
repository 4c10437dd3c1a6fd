"""Flow tokens for a pool member's own client connections.

A client registered at member A is reached from member B through A: B sends
the request to A over mutual TLS with ``Route: <sip:TOKEN@A;lr>``, and A sends
it on the connection TOKEN names. A token is the flow's own compact form
(:meth:`conclave.sip.flow.Flow.token`) and an HMAC-SHA256 of it under a key
made when A started: A sends only on a connection it named itself, never to
an address a message names, and a token from an earlier run of A (its
connections died with it) or a forged one names nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from conclave.sip.flow import Flow

MAC_BYTES = 12
"""96 bits of HMAC: not guessable in any number of tries a flood can make."""


class MemberTokens:
    """Make and check the tokens of one member process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()[:MAC_BYTES].hex()

    def token(self, flow: Flow) -> str | None:
        """The token naming ``flow``; None for a flow without IP literals."""
        try:
            text = flow.token()
        except ValueError:
            return None
        return f"{text}.{self._mac(text)}"

    def flow(self, token: str) -> Flow | None:
        """The flow ``token`` names, or None when it is not one of ours."""
        text, _, mac = token.rpartition(".")
        if not text or not hmac.compare_digest(mac, self._mac(text)):
            return None
        try:
            return Flow.from_token(text)
        except ValueError:
            return None
