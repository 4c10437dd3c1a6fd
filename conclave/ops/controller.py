"""The logging controller (the ``logging-controller`` role): receives and stores events.

Agents connect over mutual TLS (RFC 5425): the controller presents its
certificate (``[logging_controller] cert``, by default the server's) and
requires one from a CA in ``[logging_controller] client_cas``, checked
against that CA's CRL (``crl.pem`` beside it) when every listed CA has one.
Each connection carries RFC 5424 messages in octet-counting framing; each
message is parsed, its JSON event extracted, and stored in the
:class:`~conclave.ops.logstore.LogStore` (``[logging_controller] store``).

Acknowledgements (a Conclave extension): when a message carries Conclave's
structured data with ``origin`` and ``seq``, the controller writes
``ack N\\n`` back once everything up to ``N`` on that connection is
committed. Senders that never send those parameters (rsyslog, syslog-ng
forwarding) get nothing back, so standard senders work unchanged.

The controller's own warnings and key events are stored directly in the
same store, so it is searchable like every other server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from conclave.ops import log as logsetup
from conclave.ops.agent import FORWARDED_LEVELS, KEY_EVENTS
from conclave.ops.logstore import LogStore, Received
from conclave.ops.syslog import SD_ID, OctetCountingFramer, SyslogError, event_of, parse_message
from conclave.pki.errors import PkiError
from conclave.pki.tls import load_crl_file, server_context

log = structlog.get_logger("conclave.controller")

PID_FILE: Final = "logging-controller.pid"
MAX_AGENTS: Final = 1_000
"""Connections served at once: one per server of the deployment, with room."""
READ_SIZE: Final = 64 * 1024
HANDSHAKE_TIMEOUT: Final = 10.0
PURGE_INTERVAL: Final = 3600.0
"""Seconds between deletions of events older than the retention."""
MAX_OWN_PENDING: Final = 10_000
"""The controller's own events queued for its store between two writes."""


@dataclass(frozen=True)
class ControllerSettings:
    """Built from ``[logging_controller]`` by the caller."""

    host: str
    port: int
    store: Path
    retention: float
    cert: Path
    key: Path
    client_cas: tuple[Path, ...]


def controller_context(settings: ControllerSettings) -> ssl.SSLContext:
    """Server side of mutual TLS for agents; raises :class:`PkiError` on bad files."""
    cas = settings.client_cas
    context = server_context(settings.cert, settings.key, ca_path=cas[0], require_client_cert=True)
    for ca in cas[1:]:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise PkiError(f"cannot load CA certificates from {ca}: {exc}") from None
    crls = [ca.parent / "crl.pem" for ca in cas]
    if all(crl.is_file() for crl in crls):
        for crl in crls:
            load_crl_file(context, crl)
    else:
        missing = [str(c) for c in crls if not c.is_file()]
        log.warning("agent certificates not checked for revocation", missing_crls=missing)
    return context


class LoggingController:
    """Accept agents and store their events. ``await start()``, later ``await stop()``."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.store = LogStore(settings.store)
        self.port = settings.port
        self.received = 0
        self.malformed = 0
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._own: deque[Mapping[str, Any]] = deque()
        self._own_scheduled = False
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (logged as ``logging controller listening``)."""
        context = controller_context(self.settings)
        logsetup.set_sink(self._own_event)
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            ssl=context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._purger = asyncio.get_running_loop().create_task(self._purge_loop())
        log.info(
            "logging controller listening",
            address=self.settings.host,
            port=self.port,
            store=str(self.settings.store),
        )
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Closing the connections ends their handlers normally (a cancelled
        # handler task would be reported by asyncio's stream machinery).
        for writer in self._connections.values():
            writer.close()
        tasks = list(self._connections)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
        log.info("logging controller stopped", received=self.received)
        logsetup.set_sink(None)
        self._store_own()
        self.store.close()

    # -- our own events ------------------------------------------------------------------
    def _own_event(self, event: Mapping[str, Any]) -> None:
        name = str(event.get("event", ""))
        wanted = event.get("level") in FORWARDED_LEVELS or name in KEY_EVENTS
        if not (wanted or name.startswith(("logging controller", "agent "))):
            return
        if len(self._own) < MAX_OWN_PENDING:
            self._own.append(event)
        if not self._own_scheduled:
            self._own_scheduled = True
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(self._store_own)

    def _store_own(self) -> None:
        self._own_scheduled = False
        now = time.time()
        items = [Received(e, None, None, now) for e in self._own]
        self._own.clear()
        with contextlib.suppress(Exception):
            self.store.insert(items)

    # -- agents ----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self._connections) >= MAX_AGENTS:
            log.warning("agent refused", peer=peer_text, reason="too many connections")
            writer.close()
            return
        self._connections[task] = writer
        subject = _subject(writer.get_extra_info("peercert"))
        log.info("agent connected", peer=peer_text, certificate=subject)
        try:
            await self._serve(reader, writer, peer_text)
        except (OSError, ConnectionError, SyslogError, sqlite3.Error) as exc:
            # The agent keeps what was not acknowledged and sends it again.
            log.warning("agent connection closed", peer=peer_text, reason=str(exc))
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
        log.info("agent disconnected", peer=peer_text)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        framer = OctetCountingFramer()
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return
            items: list[Received] = []
            last_seq: int | None = None
            now = time.time()
            for raw in framer.feed(data):  # a framing error ends the connection
                try:
                    message = parse_message(raw)
                except SyslogError as exc:
                    self.malformed += 1
                    if self.malformed <= 10 or self.malformed % 1000 == 0:
                        log.warning("malformed syslog message", peer=peer, reason=str(exc))
                    continue
                ours = message.structured.get(SD_ID, {})
                origin, seq = ours.get("origin"), _int(ours.get("seq"))
                if origin is None or seq is None:
                    origin = seq = None
                else:
                    last_seq = seq if last_seq is None else max(last_seq, seq)
                items.append(Received(event_of(message), origin, seq, now))
            if items:
                self.store.insert(items)
                self.received += len(items)
            if last_seq is not None:
                writer.write(f"ack {last_seq}\n".encode())
                await writer.drain()

    async def _purge_loop(self) -> None:
        while True:
            try:
                removed = self.store.purge_before(time.time() - self.settings.retention)
            except Exception as exc:
                log.warning("event purge failed", reason=str(exc))
            else:
                if removed:
                    log.info("events purged", removed=removed)
            await asyncio.sleep(PURGE_INTERVAL)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and len(value) < 19 else None


def _subject(cert: object) -> str | None:
    if not isinstance(cert, dict):
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def run_controller(data_dir: Path, settings: ControllerSettings, *, host: str) -> None:
    """Run the controller in the foreground until SIGTERM or SIGINT."""
    import uvloop

    logsetup.configure(role="logging-controller", host=host)

    async def main() -> None:
        controller = LoggingController(settings)
        await controller.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        pid_file = Path(data_dir) / PID_FILE
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            await stop.wait()
        finally:
            await controller.stop()
            with contextlib.suppress(OSError):
                pid_file.unlink()

    uvloop.run(main())
