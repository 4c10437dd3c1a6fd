"""Resource limits of the transport layer, each with the reason for its size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LISTEN_BACKLOG: Final = 1024
"""Pending accepts the kernel may queue. After a Front End restart or a pool
failover thousands of clients reconnect within seconds; the usual 100 would
turn that burst into SYN retries and slow sign-in."""

ACCEPT_RETRY_DELAY: Final = 1.0
"""Seconds to pause accepting after a resource error (out of descriptors or
memory): retrying at once would spin, and closing connections frees them."""

TLS_SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds a closing TLS connection waits for the peer's close_notify. The
connection has already left the table (and its limits) by then, so a peer that
never answers must not hold the descriptor for asyncio's default 30 s."""

SHUTDOWN_GRACE: Final = 2.0
"""Seconds ``TransportManager.close()`` waits for connections to flush and
finish closing (TLS close_notify included) before aborting what is left."""


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Resource limits for stream connections. Durations in seconds, sizes in octets."""

    max_connections: int = 20_000
    """Open stream connections in total, handshakes included. A Front End serves
    about 10,000 users, each with one or two connections (desktop and phone),
    so this leaves headroom while keeping descriptors and buffers bounded."""
    max_connections_per_ip: int = 64
    """Inbound connections from one source IP. Enough for a NAT or a peer server
    with several flows, far too few for one host to exhaust the table."""
    tls_handshake_timeout: float = 10.0
    """Time for a TLS handshake. A real client needs a few round trips; a peer
    that stalls longer is holding a connection slot open for nothing."""
    idle_timeout: float = 300.0
    """Close a connection whose peer has sent nothing for this long. RFC 5626
    clients ping every 95-120 s (§4.4.1) and others refresh registrations or
    subscriptions well within it; a silent connection is dead or abandoned."""
    idle_sweep_interval: float = 10.0
    """How often the single idle sweep runs, so a connection is closed between
    ``idle_timeout`` and ``idle_timeout + idle_sweep_interval`` after it fell silent."""
    write_buffer_limit: int = 1 << 20
    """Octets queued for a peer that is not reading, after which the connection is
    closed as a slow reader (and UDP datagrams are dropped). A NOTIFY burst at
    sign-in is tens of KiB; a MiB queued means the peer has stopped reading,
    and memory must not grow with it."""
    connect_timeout: float = 5.0
    """Time to establish an outbound TCP connection (before any TLS handshake).
    Transaction timer B/F is 32 s (RFC 3261 §17.1.1.2), so a failure must be
    known well before that to try the next target (RFC 3263 §4.3)."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"TransportLimits.{name} must be positive")


DEFAULT_LIMITS: Final = TransportLimits()
"""The defaults, as one shared instance (it is frozen)."""
