"""Archiving of instant messages: policy, a hash-chained durable log, verify, export.

Theory of operation (details in docs/archiving.md):

* :mod:`.policy` -- global / site / pool / user switches for internal and
  federated conversations, resolved in memory;
* :mod:`.record` -- one JSON object per record, hash-chained by SHA-256;
* :mod:`.segments` -- append-only segment files, fsync before acknowledging,
  HEAD and CHECKPOINT, the writer lock;
* :mod:`.writer` -- group commit on a dedicated thread, driven by one task;
* :mod:`.service` -- what the router calls before delivering a MESSAGE, and
  critical mode (refuse rather than deliver unarchived);
* :mod:`.verify`, :mod:`.purge`, :mod:`.export` -- the ``conclave archive``
  commands' work (the notice for federated partners comes with federation).

Use :func:`open_archive` to build the service from the ``[archive]`` section.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from conclave.config import Config
from conclave.store.archive import ArchivePolicyStore
from conclave.store.database import Database

from .policy import SCOPES, ArchivePolicy, Override, Resolved, Switches
from .segments import ArchiveError, ArchiveLog
from .service import REFUSAL_REASON, REFUSAL_STATUS, ArchiveFeature, ArchiveService
from .verify import Report, verify
from .writer import ArchiveWriter

if TYPE_CHECKING:
    from conclave.services.setup import Setup

__all__ = [
    "REFUSAL_REASON",
    "REFUSAL_STATUS",
    "ArchiveError",
    "ArchiveFeature",
    "ArchiveLog",
    "ArchivePolicy",
    "ArchiveService",
    "ArchiveWriter",
    "Override",
    "Report",
    "Resolved",
    "Switches",
    "archive_directory",
    "build",
    "open_archive",
    "policy_loader",
    "verify",
]


def policy_loader(db: Database) -> Callable[[], Awaitable[Sequence[Override]]]:
    """Reads the stored overrides (``conclave archive policy set``) for the service."""

    async def load() -> list[Override]:
        rows = await ArchivePolicyStore(db).all()
        return [
            Override(r.scope, r.name, Switches(r.internal, r.federated))
            for r in rows
            if r.scope in SCOPES
        ]

    return load


def archive_directory(data_dir: Path, config: Config) -> Path:
    """Where this deployment's archive lives."""
    return config.path(data_dir, config.archive.directory)


def open_archive(
    data_dir: Path,
    config: Config,
    *,
    load_overrides: Callable[[], Awaitable[Sequence[Override]]] | None = None,
) -> ArchiveService | None:
    """The archiving agent for ``[archive]`` (None when it is off); creates the
    directory if there is none. Run its :meth:`~ArchiveService.jobs` as tasks."""
    section = config.archive
    if not section.enabled:
        return None
    directory = archive_directory(data_dir, config)
    archive = ArchiveLog(directory, segment_size=section.segment_size)
    archive.create()
    policy = ArchivePolicy(
        internal=section.internal,
        federated=section.federated,
        site=section.site,
        pool=section.pool,
    )
    return ArchiveService(
        writer=ArchiveWriter(archive),
        policy=policy,
        domain=config.server.domain,
        critical=section.critical,
        write_timeout=section.write_timeout,
        load_overrides=load_overrides,
        directory=directory,
        retention=section.retention,
    )


def build(setup: Setup) -> ArchiveFeature | None:
    """On when ``[archive] enabled``: every MESSAGE is archived before delivery."""
    service = open_archive(setup.data_dir, setup.config, load_overrides=policy_loader(setup.db))
    return None if service is None else ArchiveFeature(service)
