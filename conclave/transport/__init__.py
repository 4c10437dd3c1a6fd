"""Transports: the only SIP code in Conclave that touches sockets.

(Operations has its own: the admin HTTP listener and the syslog-over-TLS
logging agent and controller in :mod:`conclave.ops`.)

asyncio adapters for SIP over UDP, TCP and TLS (run under uvloop in the
server). They move bytes and frame streams; they parse nothing else.

Public API::

    Flow(transport, remote, local, conn_id=0)   plain data, from conclave.sip.flow
    TransportManager(on_message=..., on_closed=..., server_ssl=..., client_ssl=...,
                     guard=..., limits=TransportLimits())
        await listen(transport, host, port) -> (host, port)
        send(flow, data) -> bool
        await connect(transport, remote, server_hostname=None) -> Flow
        find_connection(transport, remote) -> Flow | None
        is_open(flow) / peer_certificate(flow) / close_connection(flow)
        await stop_listening() / await close()
        connection_count, listeners
    TransportLimits(max_connections, max_connections_per_ip, tls_handshake_timeout,
                    idle_timeout, idle_sweep_interval, write_buffer_limit, connect_timeout)
    SourceGuard(rate=, burst=, ban_seconds=, auth_failures_per_minute=, exempt=)
        allow(ip, now) -> Verdict   is_banned(ip, now)   record_auth_failure(ip, now)

Failures raise :class:`TransportError`.
"""

from __future__ import annotations

from conclave.sip.flow import TRANSPORTS, Flow
from conclave.transport.flow import TransportError
from conclave.transport.guard import MAX_TRACKED_SOURCES, SourceGuard, Verdict
from conclave.transport.limits import TransportLimits
from conclave.transport.manager import TransportManager

__all__ = [
    "MAX_TRACKED_SOURCES",
    "TRANSPORTS",
    "Flow",
    "SourceGuard",
    "TransportError",
    "TransportLimits",
    "TransportManager",
    "Verdict",
]
