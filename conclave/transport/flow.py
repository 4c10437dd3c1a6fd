"""The transport's side of flows: socket addresses and transport failures.

:class:`~conclave.sip.flow.Flow` itself is plain data in the sans-IO core
(:mod:`conclave.sip.flow`); the transport reads socket addresses into it here.
"""

from __future__ import annotations

from conclave.sip.flow import canonical_host


class TransportError(Exception):
    """A transport operation failed: no route, refused, timed out, or misused."""


def socket_address(address: object) -> tuple[str, int]:
    """``(host, port)`` from a socket address tuple (IPv6 ones have four items)."""
    if not isinstance(address, tuple) or len(address) < 2:
        raise ValueError(f"not an IP socket address: {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str) or not isinstance(port, int):
        raise ValueError(f"not an IP socket address: {address!r}")
    return canonical_host(host), port
