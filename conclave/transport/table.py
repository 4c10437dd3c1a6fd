"""The connection table: bookkeeping only, no sockets and no clock.

One dict keyed by connection id holds every stream connection, handshakes
included. Three indexes are kept beside it, each O(1) per change:

- routes: (transport, remote address) to the connections with that peer,
  oldest first, for reuse (RFC 3261 §18.1.1);
- inbound connections per source IP, for the per-source limit;
- last-receive times in a dict ordered oldest first: touching an entry
  re-inserts it at the end, so the idle sweep reads from the front and stops
  at the first fresh entry, however many connections there are.
"""

from __future__ import annotations

from conclave.sip.flow import Flow
from conclave.transport.guard import source_key
from conclave.transport.stream import StreamConnection


class ConnectionTable:
    """Stream connections by id, by route, by source, and by idleness."""

    def __init__(self) -> None:
        self._conns: dict[int, StreamConnection] = {}
        self._routes: dict[tuple[str, tuple[str, int]], dict[int, StreamConnection]] = {}
        self._per_ip: dict[str, int] = {}
        self._last_rx: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, conn_id: int) -> bool:
        return conn_id in self._conns

    def connections(self) -> list[StreamConnection]:
        return list(self._conns.values())

    def inbound_from(self, ip: str) -> int:
        """Inbound connections counted against source ``ip``."""
        return self._per_ip.get(ip, 0)

    def add(self, conn: StreamConnection) -> None:
        flow = _flow(conn)
        self._conns[flow.conn_id] = conn
        self._routes.setdefault((flow.transport, flow.remote), {})[flow.conn_id] = conn
        if not conn.outbound:
            ip = source_key(flow.remote[0])
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def remove(self, conn: StreamConnection) -> bool:
        """Forget ``conn``; False if it was not in the table."""
        flow = _flow(conn)
        if self._conns.pop(flow.conn_id, None) is None:
            return False
        route = (flow.transport, flow.remote)
        same_route = self._routes.get(route)
        if same_route is not None:
            same_route.pop(flow.conn_id, None)
            if not same_route:
                del self._routes[route]
        self._last_rx.pop(flow.conn_id, None)
        if not conn.outbound:
            ip = source_key(flow.remote[0])
            count = self._per_ip.get(ip, 0) - 1
            if count > 0:
                self._per_ip[ip] = count
            else:
                self._per_ip.pop(ip, None)
        return True

    def live(self, flow: Flow) -> StreamConnection | None:
        """The established, open connection that is exactly ``flow``, if any."""
        conn = self._conns.get(flow.conn_id)
        if conn is None or conn.flow != flow or conn.closed or not conn.established:
            return None
        return conn

    def find(
        self, transport: str, remote: tuple[str, int], server_hostname: str | None
    ) -> StreamConnection | None:
        """The newest established connection to ``remote`` that may be reused.

        With ``server_hostname`` on TLS, only a connection whose certificate was
        verified against that name qualifies (not an inbound one, never verified).
        """
        for conn in reversed(self._routes.get((transport, remote), {}).values()):
            if not conn.established or conn.closed:
                continue
            if transport == "tls" and server_hostname not in (None, conn.server_hostname):
                continue
            return conn
        return None

    def touch(self, conn_id: int, now: float) -> None:
        """``conn_id`` received data at ``now``: it becomes the newest entry."""
        self._last_rx.pop(conn_id, None)
        self._last_rx[conn_id] = now

    def idle_since(self, cutoff: float) -> list[StreamConnection]:
        """Connections that have received nothing since ``cutoff``."""
        idle = []
        for conn_id, last in self._last_rx.items():
            if last > cutoff:
                break
            idle.append(self._conns[conn_id])
        return idle


def _flow(conn: StreamConnection) -> Flow:
    flow = conn.flow
    assert flow is not None, "a connection enters the table with its flow"
    return flow
