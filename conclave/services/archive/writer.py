"""Group commit: one task and one thread write every record, one fsync per batch.

:meth:`ArchiveWriter.append` queues a record and returns a future. The
:meth:`~ArchiveWriter.run` task takes everything queued (up to
:data:`MAX_BATCH`), hands it to :meth:`ArchiveLog.append` on the archive's
own thread (the event loop never blocks on the disk), and resolves each
future with the sealed record once the batch's fsync has returned, or with
:class:`~.segments.ArchiveError` if it failed. Messages that arrive while a
batch is being written form the next batch, so under load many messages
share one fsync.

The thread is dedicated (not the loop's default executor) so that an
archive write never queues behind unrelated blocking work, and so that a
retention purge (:meth:`ArchiveWriter.call`) is ordered with the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

from .record import Record
from .segments import ArchiveError, ArchiveLog

log = structlog.get_logger("conclave.archive")

T = TypeVar("T")

MAX_BATCH = 512
"""Records per write at most: about 1 MiB of typical messages, so one slow
batch cannot hold a huge backlog hostage to a single fsync."""


class ArchiveWriter:
    """Appends records to an :class:`ArchiveLog` in batches; run :meth:`run` as a task."""

    def __init__(self, archive: ArchiveLog, *, max_batch: int = MAX_BATCH) -> None:
        self.archive = archive
        self.max_batch = max_batch
        self.batches = 0
        self._queue: list[tuple[Record, asyncio.Future[Record]]] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")
        self._closed = False

    def append(self, record: Record) -> asyncio.Future[Record]:
        """Queue ``record``; the future gives it sealed once durable (or raises)."""
        future: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ArchiveError("archive writer stopped"))
            return future
        self._queue.append((record, future))
        self._wake.set()
        return future

    async def call(self, job: Callable[[], T]) -> T:
        """Run a blocking archive job (a purge) on the archive thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def run(self) -> None:
        """Write batches until cancelled; then finish the batch in hand and fail the rest."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                    await self._write(batch)
        finally:
            self._closed = True
            for _record, future in self._queue:
                if not future.done():
                    future.set_exception(ArchiveError("archive writer stopped"))
            self._queue.clear()
            await asyncio.get_running_loop().run_in_executor(self._executor, self.archive.close)
            self._executor.shutdown(wait=False)

    async def _write(self, batch: list[tuple[Record, asyncio.Future[Record]]]) -> None:
        records = [record for record, _ in batch]
        job = asyncio.get_running_loop().run_in_executor(
            self._executor, self.archive.append, records
        )
        try:
            sealed = await asyncio.shield(job)
        except asyncio.CancelledError:
            # Stopping: the thread is writing this batch anyway; report its
            # real outcome to the waiting messages, then stop.
            with contextlib.suppress(Exception):
                await job
            self._settle(batch, job)
            raise
        except Exception:
            self._settle(batch, job)
            return
        self.batches += 1
        for (_, future), done in zip(batch, sealed, strict=True):
            if not future.done():
                future.set_result(done)

    def _settle(
        self, batch: list[tuple[Record, asyncio.Future[Record]]], job: asyncio.Future[list[Record]]
    ) -> None:
        if job.done() and not job.cancelled() and job.exception() is None:
            for (_, future), done in zip(batch, job.result(), strict=True):
                if not future.done():
                    future.set_result(done)
            return
        error = job.exception() if job.done() and not job.cancelled() else None
        reason = str(error) if error is not None else "archive writer stopped"
        for _, future in batch:
            if not future.done():
                future.set_exception(ArchiveError(reason))
