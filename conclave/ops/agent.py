"""The logging agent: forwards this server's events to the logging controller.

Every role runs one. It sits in the structlog pipeline (:func:`conclave.ops.log.set_sink`)
and picks the events of the two scenarios:

* **AlwaysOn**: every warning and error, and the key events in
  :data:`KEY_EVENTS` (start and stop, registrations, authentication
  failures and bans, certificate changes...). Modules add their own key
  events with :func:`add_key_events`.
* **On-demand debug**: while a debug session is active
  (:mod:`conclave.ops.trace`), the ``sip trace`` events and every other
  event of the traced user or call.

Theory of operation. The sink only appends the event to an in-memory queue
(bounded by :data:`MAX_PENDING`) and schedules a collection on the event
loop. Collection appends the queued events to the on-disk
:class:`~conclave.ops.logbuffer.LogBuffer`. A sender task keeps a TLS
connection to the controller (mutual TLS: we present the server
certificate, the controller's must chain to ``[logging] controller_ca``)
and sends the buffered events oldest first, each as an RFC 5424 message in
RFC 5425 framing. A Conclave controller answers ``ack N`` lines once events
up to N are stored; only then are they deleted from the buffer. After a
reconnection the sender starts again from the oldest event still buffered,
and the controller drops what it already has (origin and sequence number).
So within the buffer's bound nothing is lost, whatever the controller does.
For a plain syslog server (``controller_acks = false``), which never
answers, an event counts as delivered once written to the connection.

When the buffer is full, new events are dropped and counted
(``conclave_log_events_dropped_total``); once it has drained below half,
a ``log events dropped`` warning with the count goes to the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from conclave.ops import log as logsetup
from conclave.ops import metrics
from conclave.ops.logbuffer import LogBuffer
from conclave.ops.syslog import format_event, frame
from conclave.ops.trace import TRACER, Tracer
from conclave.pki.errors import PkiError
from conclave.pki.tls import client_context

log = structlog.get_logger("conclave.agent")

KEY_EVENTS: set[str] = {
    "ready", "stopping", "stopped", "listening", "stopped listening", "admin listening",
    "register", "flow closed; bindings removed",
    "authentication failed", "source banned", "identity mismatch",
    "message held for offline user", "offline message delivered",
    "certificate reloaded", "certificate reload refused", "certificate expiring",
    "presence loaded",
    "debug session started", "debug session ended", "sip trace",
    "log controller connected", "log events dropped",
}  # fmt: skip
"""Events forwarded in the AlwaysOn scenario whatever their level."""

FORWARDED_LEVELS: Final = frozenset({"warning", "error", "critical", "exception"})

MAX_PENDING: Final = 10_000
"""Events queued in memory between two collections (normally a few). Beyond
this a burst is dropped and counted rather than growing memory."""
BATCH: Final = 200
"""Events read from the buffer and written per send."""
WINDOW: Final = 2_000
"""Events sent but not yet acknowledged: bounds what a reconnection resends."""
CONNECT_TIMEOUT: Final = 10.0
"""Seconds for the TCP connection and TLS handshake to the controller."""
RECONNECT_MIN: Final = 0.5
RECONNECT_MAX: Final = 10.0
"""Reconnection delays double from the first to the second: an unreachable
controller costs a connection attempt every 10 s at most."""
STOP_FLUSH: Final = 3.0
"""Seconds a stopping server waits for buffered events to be acknowledged;
what remains stays on disk and goes out at the next start."""
LOW_WATER: Final = 0.5
"""Fraction of the bound the buffer must drain to before a drop is reported."""
MAX_ACK_LINE: Final = 64


def add_key_events(*names: str) -> None:
    """Forward events called ``names`` in the AlwaysOn scenario (e.g. a service's own)."""
    KEY_EVENTS.update(names)


@dataclass(frozen=True)
class AgentSettings:
    """Where and how to deliver events. Built from ``[logging]`` by the caller."""

    host: str
    port: int
    server_name: str
    """Name the controller's certificate must carry."""
    ca: Path
    cert: Path | None
    key: Path | None
    acks: bool
    buffer_dir: Path
    buffer_max: int


class LoggingAgent:
    """Collects events and delivers them. ``install()``, ``start()``, later ``await stop()``.

    Without settings (no controller configured) it forwards nothing, and the
    events are only on stderr.
    """

    def __init__(self, settings: AgentSettings | None, *, tracer: Tracer = TRACER) -> None:
        self.tracer = tracer
        self.buffer: LogBuffer | None = None
        if settings is not None:
            try:
                self.buffer = LogBuffer(settings.buffer_dir, settings.buffer_max)
            except (OSError, sqlite3.Error) as exc:
                # The server runs without forwarding rather than not at all.
                log.error(
                    "log buffer unusable; events are not forwarded",
                    path=str(settings.buffer_dir),
                    reason=str(exc),
                )
                settings = None
        self.settings = settings
        self._pending: deque[Mapping[str, Any]] = deque()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dropped = 0
        self._dropped_first: str | None = None
        self._connected = False
        self._down_logged = False
        self._error: BaseException | None = None
        self._acked = 0
        self._write_failed = False
        self._delivery = asyncio.Event()
        self.delivered = 0
        """Events delivered since start (acknowledged, or written for a plain syslog server)."""

    # -- collection ------------------------------------------------------------------------
    def install(self) -> None:
        """Start receiving events (before anything worth forwarding is logged)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        logsetup.set_sink(self.sink)

    def sink(self, event: Mapping[str, Any]) -> None:
        """The structlog sink: pick and queue. Called for every event; never blocks."""
        if self.buffer is None:
            return
        wanted = (
            event.get("level") in FORWARDED_LEVELS
            or event.get("event") in KEY_EVENTS
            or (self.tracer.active and self.tracer.wants_event(dict(event)))
        )
        if not wanted:
            return
        if len(self._pending) >= MAX_PENDING:
            self._note_dropped(1, event)
            return
        self._pending.append(event)
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            if threading.get_ident() == self._thread:
                self._loop.call_soon(self.collect)
            else:
                self._loop.call_soon_threadsafe(self.collect)

    def collect(self) -> None:
        """Move queued events to the disk buffer and wake the sender."""
        self._scheduled = False
        if self.buffer is None or not self._pending:
            return
        events = []
        while self._pending:  # popleft: a thread may append meanwhile
            events.append(self._pending.popleft())
        payloads = [_dumps(e) for e in events]
        try:
            dropped = self.buffer.append(payloads)
        except Exception as exc:  # a broken disk must not break the server
            dropped = len(payloads)
            if not self._write_failed:  # once per failure streak: this event is queued too
                self._write_failed = True
                log.error("log buffer write failed", reason=str(exc))
        else:
            self._write_failed = False
        if dropped:
            self._note_dropped(dropped, events[-dropped])
        self._report_recovery()
        self._update_gauges()
        self._wakeup.set()

    def _note_dropped(self, count: int, event: Mapping[str, Any]) -> None:
        metrics.LOG_DROPPED.inc(count)
        if self._dropped == 0:
            self._dropped_first = str(event.get("time", ""))
        self._dropped += count

    def _report_recovery(self) -> None:
        buffer = self.buffer
        if self._dropped and buffer is not None and buffer.bytes < buffer.max_bytes * LOW_WATER:
            count, first = self._dropped, self._dropped_first
            self._dropped, self._dropped_first = 0, None
            log.warning(
                "log events dropped",
                count=count,
                first=first,
                reason="the local log buffer was full",
                buffer_max=buffer.max_bytes,
            )

    def _update_gauges(self) -> None:
        if self.buffer is not None:
            metrics.LOG_BUFFER_EVENTS.set(self.buffer.count)
            metrics.LOG_BUFFER_BYTES.set(self.buffer.bytes)

    # -- delivery --------------------------------------------------------------------------
    def start(self) -> None:
        """Start delivering (a no-op without a controller)."""
        if self.settings is None or self._task is not None:
            return
        if self._loop is None:
            self.install()
        self._update_gauges()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def connected(self) -> bool:
        return self._connected

    async def stop(self) -> None:
        """Flush what can be flushed in :data:`STOP_FLUSH` seconds, then stop."""
        self.collect()
        buffer = self.buffer
        deadline = time.monotonic() + STOP_FLUSH
        while (
            buffer is not None
            and buffer.count
            and self._connected
            and (remaining := deadline - time.monotonic()) > 0
        ):
            self.collect()
            self._delivery.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._delivery.wait(), remaining)
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        logsetup.set_sink(None)
        self.collect()
        if buffer is not None:
            buffer.close()

    def _delivered(self, count: int) -> None:
        if count:
            self.delivered += count
            metrics.LOG_FORWARDED.inc(count)
            self._update_gauges()
            self._report_recovery()
        self._delivery.set()

    async def _run(self) -> None:
        settings = self.settings
        assert settings is not None
        delay = RECONNECT_MIN
        while not self._stopping:
            try:
                reader, writer = await self._connect(settings)
            except (OSError, TimeoutError, ssl.SSLError, PkiError) as exc:
                if not self._down_logged:
                    self._down_logged = True
                    log.warning(
                        "log controller unreachable",
                        controller=f"{settings.host}:{settings.port}",
                        reason=_reason(exc),
                        buffered=self.buffer.count if self.buffer else 0,
                    )
                await self._pause(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_MIN
            self._down_logged = False
            self._connected = True
            metrics.LOG_CONNECTED.set(1)
            log.info("log controller connected", controller=f"{settings.host}:{settings.port}")
            try:
                await self._session(reader, writer, settings.acks)
            except (OSError, ConnectionError, ValueError) as exc:
                if not self._stopping:
                    log.warning("log controller connection lost", reason=_reason(exc))
            finally:
                self._connected = False
                metrics.LOG_CONNECTED.set(0)
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)

    async def _connect(
        self, settings: AgentSettings
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # A fresh context per attempt picks up a renewed certificate.
        context = client_context(settings.ca, cert_path=settings.cert, key_path=settings.key)
        return await asyncio.wait_for(
            asyncio.open_connection(
                settings.host, settings.port, ssl=context, server_hostname=settings.server_name
            ),
            CONNECT_TIMEOUT,
        )

    async def _pause(self, seconds: float) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_stop(), seconds)

    async def _wait_stop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, acks: bool
    ) -> None:
        buffer = self.buffer
        assert buffer is not None
        self._error = None
        self._acked = (buffer.first_seq() or 0) - 1
        sent = self._acked
        listener = asyncio.get_running_loop().create_task(self._listen(reader, acks))
        procid = os.getpid()
        try:
            while not self._stopping:
                self._wakeup.clear()
                if self._error is not None:
                    raise self._error
                rows = []
                if not acks or sent - self._acked < WINDOW:
                    # Never resend what was acknowledged meanwhile.
                    rows = buffer.read_after(max(sent, self._acked), BATCH)
                if not rows:
                    await self._wakeup.wait()
                    continue
                data = b"".join(
                    frame(format_event(json.loads(p), origin=buffer.origin, seq=s, procid=procid))
                    for s, p in rows
                )
                writer.write(data)
                await writer.drain()
                sent = rows[-1][0]
                if not acks:  # a plain syslog server: written is all we will know
                    self._delivered(buffer.delete_through(sent))
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, reader: asyncio.StreamReader, acks: bool) -> None:
        """Read ``ack N`` lines (or just notice the connection closing)."""
        buffer = self.buffer
        assert buffer is not None
        try:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("the controller closed the connection")
                if not acks:
                    continue
                parts = line.split()
                if len(line) > MAX_ACK_LINE or len(parts) != 2 or parts[0] != b"ack":
                    raise ValueError(f"unexpected data from the controller: {line[:40]!r}")
                seq = int(parts[1])
                if seq > self._acked:
                    self._acked = seq
                    self._delivered(buffer.delete_through(seq))
                    self._wakeup.set()
        except (OSError, ConnectionError, ValueError, asyncio.LimitOverrunError) as exc:
            self._error = exc if isinstance(exc, OSError | ValueError) else ConnectionError(exc)
            self._wakeup.set()


def _dumps(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, default=str, ensure_ascii=False, separators=(",", ":")).encode()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
