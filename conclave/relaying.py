"""What the Front End, Edge and Director processes share: source limits, trusted peers,
and (for the Edge and the Director) the life of a relaying process.

* :func:`source_guard`: the per-source limits ``[limits]`` describes, with the
  addresses that are exempt (an Edge's or a Director's: the clients behind
  them are judged one by one);
* :class:`PeerTrust`: which connections come from a trusted Edge or Director,
  by the names on their verified *server* certificate (a user's client
  certificate never passes for a server), and the client address an Edge
  stamped in the Via below its own;
* :class:`RelayProcess`: signals, pid file, background jobs, ban sweeps, the
  admin interface and a graceful stop, for the two roles that keep no
  registrations of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import structlog

from conclave.config import PID_FILE, Config
from conclave.core.stack import SipStack
from conclave.ops import metrics
from conclave.ops.runtime import Operations
from conclave.pki.errors import PkiError
from conclave.pki.identity import server_identity
from conclave.sip.flow import Flow, canonical_host
from conclave.sip.message import Request
from conclave.sip.transaction import TransactionLayer
from conclave.transport.guard import SourceGuard
from conclave.transport.manager import TransportManager

log = structlog.get_logger("conclave.relaying")

DRAIN_TIMEOUT = 10.0
"""Longest a graceful stop waits for relayed requests to get their final responses."""
BAN_SWEEP_INTERVAL = 1.0
"""Seconds between collections of ended source bans (logged, counted)."""
MAX_BAN_END_LINES = 100
"""Ended bans logged one line each per sweep; beyond this, one summary line."""
RELAY_EXTENSIONS = frozenset({"path", "outbound"})
"""What an Edge or a Director supports (it passes Path and outbound through)."""


def source_guard(config: Config, exempt: Iterable[str] = ()) -> SourceGuard:
    """The per-source limits of ``[limits]``; ``exempt`` addresses are never limited."""
    limits = config.limits
    return SourceGuard(
        rate=limits.requests_per_second,
        burst=limits.burst,
        ban_seconds=limits.ban_seconds,
        max_ban_seconds=limits.max_ban_seconds,
        auth_failures_per_minute=limits.auth_failures_per_minute,
        exempt=exempt,
    )


async def every(interval: float, job: Callable[[], Awaitable[object]]) -> None:
    """Run ``job`` every ``interval`` seconds for good; a failure is logged and retried."""
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception as exc:  # keep the loop alive; the next round retries
            log.warning("background job failed", job=job.__name__, reason=str(exc))


def log_ended_bans(guard: SourceGuard) -> None:
    """Collect the bans that ended: one line each (bounded) and the unban counter."""
    ended = guard.ended_bans(time.time())
    if not ended:
        return
    metrics.SOURCE_UNBANS.inc(len(ended))
    for source in ended[:MAX_BAN_END_LINES]:
        log.info("source ban ended", source=source)
    if len(ended) > MAX_BAN_END_LINES:
        log.info("source bans ended", count=len(ended) - MAX_BAN_END_LINES, more=True)


class PeerTrust:
    """Trusted Edges and Directors among a process's TLS connections (see the module
    docstring). Names are cached per connection until it closes (:meth:`forget`)."""

    def __init__(
        self,
        transports: TransportManager,
        *,
        edges: Iterable[str] = (),
        directors: Iterable[str] = (),
        members: Iterable[str] = (),
        on_edge: Callable[[str, Flow], None] | None = None,
    ) -> None:
        self.transports = transports
        self.edges = frozenset(n.lower() for n in edges)
        self.directors = frozenset(n.lower() for n in directors)
        self.members = frozenset(n.lower() for n in members)
        """The other Front Ends of this pool (docs/pools.md)."""
        self.on_edge = on_edge
        """Told of each connection found to be with an Edge or a pool member (by its name)."""
        self._names: dict[int, frozenset[str]] = {}

    def names(self, flow: Flow) -> frozenset[str]:
        """The names of a TLS peer's verified server certificate (none for anyone else)."""
        if not flow.secure:
            return frozenset()
        known = self._names.get(flow.conn_id)
        if known is None:
            der = self.transports.peer_certificate_der(flow)
            try:
                known = frozenset(server_identity(der).names) if der else frozenset()
            except PkiError:
                known = frozenset()
            self._names[flow.conn_id] = known
            if self.on_edge is not None:
                for name in known & (self.edges | self.members):
                    self.on_edge(name, flow)
        return known

    def from_edge(self, flow: Flow) -> bool:
        return bool(self.edges and self.names(flow) & self.edges)

    def from_director(self, flow: Flow) -> bool:
        return bool(self.directors and self.names(flow) & self.directors)

    def from_member(self, flow: Flow) -> bool:
        return bool(self.members and self.names(flow) & self.members)

    def from_relay(self, flow: Flow) -> bool:
        """An Edge or a Director: each binds in-dialog requests to their parties itself."""
        return self.from_edge(flow) or self.from_director(flow)

    def edge_client(self, request: Request, flow: Flow) -> str | None:
        """The client address a trusted Edge stamped in the Via below its own."""
        if not self.from_edge(flow):
            return None
        vias = request.vias
        if len(vias) < 2:
            return None
        try:
            return canonical_host(vias[1].received or vias[1].host)
        except ValueError:  # a name, not an address: the Edge did not stamp it
            return None

    def forget(self, flow: Flow) -> bool:
        """The connection closed; True if it was an Edge's, a Director's or a member's."""
        names = self._names.pop(flow.conn_id, frozenset())
        return bool(names & (self.edges | self.directors | self.members))


class RelayProcess:
    """The shared life of an Edge or a Director process (see the module docstring)."""

    role = "relay"

    def __init__(self, data_dir: Path, config: Config, *, exempt: Iterable[str] = ()) -> None:
        self.data_dir = data_dir
        self.config = config
        self.ops = Operations(data_dir, config, role=self.role)
        self.stop_event = asyncio.Event()
        self.guard = source_guard(config, exempt)
        self.layer = TransactionLayer()
        self.stack = SipStack(layer=self.layer, guard=self.guard, supported=RELAY_EXTENSIONS)
        self.tasks: list[asyncio.Task[None]] = []

    transports: TransportManager

    def pending(self) -> int:
        """Requests still waiting for their final responses (a graceful stop waits)."""
        return 0

    async def serve(self, jobs: Iterable[tuple[float, Callable[[], Awaitable[None]]]]) -> None:
        """Run until SIGTERM or SIGINT: the jobs, ban sweeps, the admin interface; then
        stop gracefully. Call once the listeners are open and the stack attached."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        (self.data_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        self.tasks = [
            asyncio.create_task(every(interval, job))
            for interval, job in (*jobs, (BAN_SWEEP_INTERVAL, self._ended_bans))
        ]
        await self.ops.start(
            registrations=lambda: 0,
            connections=lambda: self.transports.connection_count,
            subscriptions=None,
            certificate_expiry=None,
            listening=lambda: bool(self.transports.listeners) and not self.stack.draining,
            database=None,
        )

    async def wait_and_stop(self, extra: Iterable[asyncio.Task[None]] = ()) -> None:
        try:
            await self.stop_event.wait()
        finally:
            await self._shutdown(list(extra))

    async def _ended_bans(self) -> None:
        log_ended_bans(self.guard)

    async def closing(self) -> None:
        """What the role closes after its connections (databases)."""

    async def _shutdown(self, extra: list[asyncio.Task[None]]) -> None:
        log.info("stopping", open_transactions=len(self.layer))
        self.stack.draining = True
        await self.transports.stop_listening()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in [*self.tasks, *extra]:
            task.cancel()
        await asyncio.gather(*self.tasks, *extra, return_exceptions=True)
        self.stack.stop()
        await self.transports.close()
        await self.closing()
        with contextlib.suppress(OSError):
            (self.data_dir / PID_FILE).unlink()
        log.info("stopped")
        await self.ops.stop()
