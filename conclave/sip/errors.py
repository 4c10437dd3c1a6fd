"""The two error families of the SIP core.

*Remote* errors mean the peer sent something wrong. Each carries the status a
server should answer with and a one-line reason, so that after bad input the
caller can still respond properly (or, for a datagram it cannot parse at all,
drop it and log the reason).

*Local* errors mean the caller misused the API (for example, asked a client
transaction to send a response). They indicate a bug in Conclave, not in the
peer.

The parser raises nothing but :class:`RemoteProtocolError`, ever.
"""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error the SIP core raises on purpose."""


class RemoteProtocolError(SipError):
    """The peer sent something that violates SIP.

    ``status`` is the response code to answer with (400, 413, 416, 420, 505,
    513, ...). ``headers`` are extra header fields that belong in that answer,
    such as ``Unsupported`` for a 420.
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.reason!r}, status={self.status})"


class LocalProtocolError(SipError):
    """The caller used the API in a way it does not allow."""
