"""The operations side of a server process, in one object the server starts and stops.

:class:`Operations` owns the logging agent (:mod:`conclave.ops.agent`), the
debug-session control (:mod:`conclave.ops.trace`), the admin listener
(:mod:`conclave.ops.admin`, only with ``[admin] enabled = true``) and the
gauges that read server state at scrape time. The server creates it early
(so start-up events are forwarded), calls :meth:`Operations.start` once its
parts exist and :meth:`Operations.stop` last thing when stopping.

The functions at the bottom turn ``conclave.toml`` into the agent's and the
controller's settings; ``conclave logs`` uses them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from conclave.config import Config
from conclave.ops import metrics
from conclave.ops.admin import AdminServer, Extend, ReadyCheck
from conclave.ops.agent import AgentSettings, LoggingAgent
from conclave.ops.controller import AgentHost, ControllerSettings
from conclave.ops.logbuffer import BUFFER_DIR
from conclave.ops.trace import CONTROL_FILE, CONTROL_POLL, TRACER, Tracer, read_sessions
from conclave.store.database import Database

if TYPE_CHECKING:
    from conclave.topology.model import Topology

log = structlog.get_logger("conclave.ops")

DEBUG_SIGNAL = signal.SIGUSR1
"""``conclave logs debug`` sends this after changing the control file."""


class Operations:
    """Logging agent, debug control, admin listener and gauges for one server."""

    def __init__(
        self,
        data_dir: Path,
        config: Config,
        *,
        role: str,
        tracer: Tracer = TRACER,
        worker: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.role = role
        self.tracer = tracer
        self.agent = LoggingAgent(agent_settings(self.data_dir, config, worker), tracer=tracer)
        self.admin: AdminServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._control_stamp: tuple[int, int] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._signal = False
        with contextlib.suppress(RuntimeError):  # no loop yet: install() in start()
            asyncio.get_running_loop()
            self.agent.install()

    async def start(
        self,
        *,
        registrations: Callable[[], float],
        connections: Callable[[], float],
        subscriptions: Callable[[], float] | None,
        certificate_expiry: Callable[[], dt.datetime] | None,
        listening: Callable[[], bool],
        database: Database | None,
        console: Extend | None = None,
        tls: ssl.SSLContext | None = None,
        guard: dict[str, Any] | None = None,
    ) -> None:
        """Deliver logs, obey debug sessions, publish gauges, and serve /metrics if enabled."""
        self.agent.start()
        metrics.STATE.attach(
            self,
            registrations=registrations,
            connections=connections,
            subscriptions=subscriptions,
            certificate_expiry=certificate_expiry,
        )
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(DEBUG_SIGNAL, self.reload_debug)
            self._signal = True
        self.reload_debug()
        self._tasks.append(loop.create_task(self._poll_control()))
        if self.config.admin.enabled:

            async def listeners_up() -> bool:
                return listening()

            checks: dict[str, ReadyCheck] = {"listeners": listeners_up}
            if database is not None:  # an Edge has none
                db = database
                checks["database"] = lambda: database_reachable(db)
            host, port = split_endpoint(self.config.admin.bind)
            self.admin = AdminServer(host, port, checks, console=console, tls=tls, guard=guard)
            await self.admin.start()

    async def stop(self) -> None:
        """Stop serving, end debug sessions here, and flush the agent (bounded)."""
        if self.admin is not None:
            await self.admin.stop()
        metrics.STATE.detach(self)
        if self._signal:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(DEBUG_SIGNAL)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._expiry is not None:
            self._expiry.cancel()
        if self.tracer.active:
            self.tracer.set_sessions(())
        await self.agent.stop()

    # -- debug sessions ------------------------------------------------------------------
    def reload_debug(self) -> None:
        """Re-read the control file (SIGUSR1, or a change seen by the poll)."""
        self._control_stamp = self._stamp()
        self.tracer.set_sessions(read_sessions(self.data_dir))
        self._arm_expiry()

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        end = self.tracer.next_end()
        if end is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_at(loop.time() + max(0.0, end - time.time()), self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self.tracer.expire()
        self._arm_expiry()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.data_dir / CONTROL_FILE).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    async def _poll_control(self) -> None:
        while True:
            await asyncio.sleep(CONTROL_POLL)
            if self._stamp() != self._control_stamp:
                self.reload_debug()


async def database_reachable(database: Database) -> bool:
    """True if a trivial query succeeds (the readiness check)."""
    async with database.transaction() as session:
        await session.execute(text("SELECT 1"))
    return True


def split_endpoint(value: str) -> tuple[str, int]:
    """``("::1", 6514)`` from ``"[::1]:6514"``; ``("host", 1)`` from ``"host:1"``."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:]+):(\d+)", value.strip())
    if match is None:
        raise ValueError(f"not host:port: {value!r}")
    return (match.group(1) or match.group(3)), int(match.group(2) or match.group(4))


def agent_settings(data_dir: Path, config: Config, worker: int = 0) -> AgentSettings | None:
    """The agent's settings from ``[logging]``, or None when no controller is configured.
    Worker ``worker`` of a host running several keeps its own buffer (docs/pools.md)."""
    section = config.logging
    if not section.controller:
        return None
    host, port = split_endpoint(section.controller)
    return AgentSettings(
        host=host,
        port=port,
        server_name=section.controller_name or host,
        ca=config.path(data_dir, section.controller_ca),
        cert=config.path(data_dir, config.tls.cert),
        key=config.path(data_dir, config.tls.key),
        acks=section.controller_acks,
        buffer_dir=Path(data_dir) / BUFFER_DIR / (f"worker-{worker}" if worker else ""),
        buffer_max=section.buffer_max,
    )


def controller_settings(
    data_dir: Path,
    config: Config,
    *,
    listen: str | None = None,
    topology: Topology | None = None,
) -> ControllerSettings:
    """The controller's settings from ``[logging_controller]`` (``listen`` overrides it).

    With ``topology``, only its hosts may send events (:func:`agent_hosts`);
    without one, any server certificate of a trusted CA may.
    """
    section = config.logging_controller
    host, port = split_endpoint(listen or section.listen)
    cert = section.cert or config.tls.cert
    key = section.key or config.tls.key
    return ControllerSettings(
        host=host,
        port=port,
        store=config.path(data_dir, section.store),
        retention=section.retention,
        cert=config.path(data_dir, cert),
        key=config.path(data_dir, key),
        client_cas=tuple(config.path(data_dir, ca) for ca in section.client_cas),
        agents=None if topology is None else agent_hosts(topology),
    )


def agent_hosts(topology: Topology) -> tuple[AgentHost, ...]:
    """Every host of the topology with the roles its servers report in their events.

    A Front End of a Standard Edition pool reports ``standard`` (as
    :func:`conclave.roles.run_role` configures it); every other role its own name.
    """
    hosts = []
    for ref in topology.hosts():
        roles = tuple(
            "standard" if role == "frontend" and ref.pool.edition == "standard" else role
            for role in ref.roles
        )
        hosts.append(AgentHost(ref.host.fqdn.lower().rstrip("."), roles))
    return tuple(hosts)
