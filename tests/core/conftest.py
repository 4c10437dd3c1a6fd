"""Fixtures for the in-memory core conversations (:mod:`tests.core.network`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from .network import Core, migrated_database, play

Script = Callable[[Core], Awaitable[None]]
Converse = Callable[[Script], None]


@pytest.fixture(scope="session")
def core_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each conversation runs on its own copy."""
    return migrated_database(tmp_path_factory.mktemp("core-db"))


@pytest.fixture
def converse(core_database: Path, tmp_path: Path) -> Converse:
    """``converse(script)``: run ``await script(core)`` on a fresh core and database."""

    def run(script: Script) -> None:
        play(core_database, tmp_path, script)

    return run
