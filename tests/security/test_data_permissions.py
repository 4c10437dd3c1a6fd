"""Files that hold password equivalents or every user's events are private from birth.

``conclave.db`` keeps digest HA1 values (as good as the password for this
realm), ``logs/events.db`` every server's events, ``conclave.toml`` the whole
configuration. A local user who can read them needs no other attack; with a
umask of 022 (the usual) they used to be created 0644. The data directory is
0700, but one ``chmod`` or a copy elsewhere (a backup) is enough to expose
world-readable files, so each file is 0600 itself, SQLite's ``-wal`` and
``-shm`` included, and ``conclave audit`` reports any that is not.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from conclave.audit import run_audit
from conclave.config import load_config
from conclave.ops.logbuffer import LogBuffer
from conclave.ops.logstore import LogStore, Received
from conclave.store.database import Database, migrate

CONCLAVE = [sys.executable, "-m", "conclave"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most systems start with: group and others may read new files."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    proc = subprocess.run(
        [*CONCLAVE, "init", "--domain", "example.test", "--dir", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return path


def test_init_creates_the_config_and_the_database_private(data: Path) -> None:
    assert mode(data / "conclave.toml") == 0o600
    assert mode(data / "conclave.db") == 0o600
    assert mode(data) == 0o700
    # Certificates stay public documents.
    assert mode(data / "ca" / "ca.crt") == 0o644


def test_the_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"
    migrate(url)

    async def write_and_look() -> dict[str, int]:
        async with Database(url) as db:
            async with db.transaction() as session:  # a write: SQLite opens -wal and -shm
                await session.execute(text("CREATE TABLE scratch (x INTEGER)"))
            return {p.name: mode(p) for p in tmp_path.iterdir()}

    modes = asyncio.run(write_and_look())
    assert modes == {"conclave.db": 0o600, "conclave.db-wal": 0o600, "conclave.db-shm": 0o600}


def test_the_event_store_and_buffer_are_private(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs" / "events.db")
    store.insert([Received({"event": "register", "user": "alice"}, None, None, 0.0)])
    buffer = LogBuffer(tmp_path / "logbuffer", 1 << 20)
    buffer.append([b'{"event":"register"}'])
    try:
        found = {p.name: mode(p) for p in (tmp_path / "logs").iterdir()}
        found |= {p.name: mode(p) for p in (tmp_path / "logbuffer").glob("buffer.db*")}
    finally:
        store.close()
        buffer.close()
    assert found == {
        "events.db": 0o600,
        "events.db-wal": 0o600,
        "events.db-shm": 0o600,
        "buffer.db": 0o600,
        "buffer.db-wal": 0o600,
        "buffer.db-shm": 0o600,
    }


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    # Only new files are made private; an operator's choice is reported, not overridden.
    path = tmp_path / "conclave.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o640)
    migrate(f"sqlite:///{path}")
    assert mode(path) == 0o640


def test_audit_reports_readable_config_database_and_event_files(data: Path) -> None:
    config = load_config(data)
    events = config.path(data, config.logging_controller.store)
    LogStore(events).close()
    wal = data / "conclave.db-wal"
    wal.touch()
    exposed = [data / "conclave.toml", data / "conclave.db", wal, events]
    for path in exposed:
        os.chmod(path, 0o644)
    findings = [f for f in run_audit(data_dirs=[data]).findings if f.rule == "DATA-PERMISSIONS"]
    assert sorted(f.where for f in findings) == sorted(str(p) for p in exposed)
    assert any(f"configuration {data / 'conclave.toml'} has mode 0644" in f.found for f in findings)
    for path in exposed:
        if path.exists():  # the audit's read of the users closed SQLite's stray -wal
            os.chmod(path, 0o600)
    assert not [f for f in run_audit(data_dirs=[data]).findings if f.rule == "DATA-PERMISSIONS"]
