"""The archiving agent: a gate before the delivery of each MESSAGE.

:class:`ArchiveFeature` hooks BEFORE_DELIVERY (:mod:`conclave.core.features`).
:meth:`ArchiveService.before_delivery` decides, synchronously and from
memory, whether a MESSAGE falls under an archiving policy. If not, it
returns None and the router delivers as usual (nothing awaits). If so, it
returns a coroutine that holds delivery: it queues the record, waits until
it is durable (fsync; see :mod:`.writer`), and only then resolves to None
(deliver: forward, or hold for an offline user). So every message that gets
a 2xx or 202 is in the archive, even after kill -9.

**Critical mode** (``[archive] critical``, on by default): a record that
cannot be written within ``write_timeout`` resolves to a refusal, and the
sender gets
``503 Archive unavailable; message not delivered`` (with Retry-After) and
the message goes nowhere. Every new message tries the archive again, so
service resumes by itself as soon as a write succeeds. With critical mode
off the message is delivered unarchived and the failure logged.

Policy overrides (user, pool, site) are read from the database by
:meth:`run_reload`; until the first read completes, messages wait for it
(bounded by ``write_timeout``) rather than be judged by the global policy
alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path

import structlog

from conclave.core.features import BEFORE_DELIVERY, Exchange, Feature, FeatureHost, Refusal
from conclave.ops import metrics
from conclave.sip.message import Request

from .policy import ArchivePolicy, Override
from .purge import purge
from .record import CONVERSATION_HEADERS, Record, message_record
from .segments import ArchiveError
from .writer import ArchiveWriter

log = structlog.get_logger("conclave.archive")

REFUSAL_STATUS = 503
REFUSAL_REASON = "Archive unavailable; message not delivered"
RETRY_AFTER = "10"
"""Seconds a refused client is asked to wait (RFC 3261 §20.33) before trying again."""

RELOAD_INTERVAL = 5.0
"""Seconds between re-reads of the policy overrides (``conclave archive policy``)."""

RETENTION_INTERVAL = 3600.0
"""Seconds between retention purges (when ``[archive] retention`` is set)."""

REFUSAL = Refusal(REFUSAL_STATUS, REFUSAL_REASON, (("Retry-After", RETRY_AFTER),))
"""The answer in critical mode when the archive cannot take the message."""

WriteObserver = Callable[[float, bool], None]
"""``observer(seconds, ok)`` after each archive write (for metrics)."""


def conversation_id(request: Request) -> str:
    """The conversation a MESSAGE belongs to: a conversation header, else its Call-ID."""
    for name in CONVERSATION_HEADERS:
        value = request.headers.get(name)
        if value and value.strip():
            return value.strip()
    return request.call_id or ""


class ArchiveService:
    """Archives MESSAGEs under policy before they are delivered."""

    def __init__(
        self,
        *,
        writer: ArchiveWriter,
        policy: ArchivePolicy,
        domain: str,
        critical: bool = True,
        write_timeout: float = 5.0,
        load_overrides: Callable[[], Awaitable[Sequence[Override]]] | None = None,
        directory: Path | None = None,
        retention: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.policy = policy
        self.domain = domain.lower()
        self.critical = critical
        self.write_timeout = write_timeout
        self.load_overrides = load_overrides
        self.directory = directory
        self.retention = retention
        self.clock = clock
        self.available = True
        self.written = 0
        self.failures = 0
        self.refused = 0
        self.observers: list[WriteObserver] = []
        self._loaded = asyncio.Event()
        if load_overrides is None:
            self._loaded.set()

    # -- the router's question -----------------------------------------------------------
    def before_delivery(
        self, request: Request, *, recipient: str | None = None, session: bool = False
    ) -> Coroutine[object, object, Refusal | None] | None:
        """None: deliver now, unarchived. Else await the coroutine before
        delivering: it resolves to None once the message is durably archived
        (deliver it), or to the refusal to answer instead.

        ``recipient`` is the target AOR (default: the To header's).
        """
        sender = request.from_aor
        target = recipient or request.to_aor
        parties = [p for p in (sender, target) if p is not None]
        if not self._loaded.is_set():
            return self._after_load(request, parties, session)
        record = self._record(request, parties, session)
        if record is None:
            return None
        return self._archive(record)

    def _record(self, request: Request, parties: list[str], session: bool) -> Record | None:
        local = [p.removeprefix("sip:") for p in parties if self._is_local(p)]
        federated = len(local) < len(parties)
        if not self.policy.conversation(local, federated=federated):
            return None
        return message_record(
            sender=parties[0] if parties else "",
            recipients=parties[1:],
            time=self.clock(),
            content_type=request.headers.get("Content-Type") or "text/plain",
            body=request.body,
            conversation_id=conversation_id(request),
            call_id=request.call_id or "",
            federated=federated,
            session=session,
        )

    def _is_local(self, aor: str) -> bool:
        return aor.rpartition("@")[2] == self.domain

    async def _after_load(
        self, request: Request, parties: list[str], session: bool
    ) -> Refusal | None:
        try:
            await asyncio.wait_for(self._loaded.wait(), self.write_timeout)
        except TimeoutError:
            self._observe(self.write_timeout, False)
            return self._failed("archiving policies not loaded yet")
        record = self._record(request, parties, session)
        if record is None:
            return None
        return await self._archive(record)

    async def _archive(self, record: Record) -> Refusal | None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(self.writer.append(record)), self.write_timeout)
        except (ArchiveError, TimeoutError) as exc:
            self._observe(time.monotonic() - started, False)
            return self._failed(str(exc) or f"no durable write within {self.write_timeout}s")
        self._observe(time.monotonic() - started, True)
        self.written += 1
        if not self.available:
            self.available = True
            log.warning("archive available again; messages are delivered")
        return None

    def _failed(self, reason: str) -> Refusal | None:
        """A write failed: the refusal in critical mode, else None (deliver unarchived)."""
        self.failures += 1
        if self.available:
            self.available = False
            log.error("archive unavailable", reason=reason, critical=self.critical)
        if self.critical:
            self.refused += 1
            log.warning("message refused: archive unavailable", reason=reason)
            return REFUSAL
        log.error("message delivered unarchived (critical mode off)", reason=reason)
        return None

    def _observe(self, seconds: float, ok: bool) -> None:
        for observer in list(self.observers):
            try:
                observer(seconds, ok)
            except Exception:
                log.exception("archive observer failed")

    # -- background tasks ----------------------------------------------------------------
    def jobs(self) -> list[Coroutine[object, object, None]]:
        """The coroutines to run as tasks for as long as the server runs."""
        return [self.writer.run(), self.run_reload(), self.run_retention()]

    async def reload(self) -> None:
        """Read the policy overrides from the database now."""
        if self.load_overrides is None:
            return
        self.policy.load(await self.load_overrides())
        self._loaded.set()

    async def run_reload(self, interval: float = RELOAD_INTERVAL) -> None:
        """Read the overrides now and every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.reload()
            except Exception as exc:  # keep the last good policy; try again
                log.warning("archiving policies not reloaded", reason=str(exc))
            await asyncio.sleep(interval)

    async def purge_expired(self) -> int:
        """Apply ``retention`` once; returns how many records were removed."""
        if self.retention <= 0 or self.directory is None:
            return 0
        directory = self.directory
        before = dt.datetime.fromtimestamp(self.clock() - self.retention, dt.UTC)
        segment_size = self.writer.archive.segment_size
        result = await self.writer.call(lambda: purge(directory, before, segment_size=segment_size))
        if result.records:
            log.info("archive purged", records=result.records, through=result.through_seq)
        return result.records

    async def run_retention(self, interval: float = RETENTION_INTERVAL) -> None:
        """Purge past retention every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.purge_expired()
            except (ArchiveError, OSError) as exc:
                log.warning("archive purge failed", reason=str(exc))
            await asyncio.sleep(interval)


class ArchiveFeature(Feature):
    """Archiving as a feature: a BEFORE_DELIVERY gate on every MESSAGE, in or
    out of a dialog, that holds delivery until the record is durable."""

    name = "archive"

    def __init__(self, service: ArchiveService) -> None:
        self.service = service

    def register(self, host: FeatureHost) -> None:
        host.registry.hook(BEFORE_DELIVERY, self.gate)
        # conclave_archive_write_seconds and conclave_archive_failures_total
        if metrics.observe_archive_write not in self.service.observers:
            self.service.observers.append(metrics.observe_archive_write)

    def gate(self, exchange: Exchange) -> Coroutine[object, object, Refusal | None] | None:
        if exchange.method != "MESSAGE":
            return None
        return self.service.before_delivery(
            exchange.request, recipient=exchange.target, session=exchange.in_dialog
        )

    def jobs(self) -> list[Coroutine[object, object, None]]:
        return self.service.jobs()
