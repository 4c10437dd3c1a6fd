"""CDR tests reuse the store's databases: a SQLite file and PostgreSQL."""

from __future__ import annotations

from tests.store.conftest import database_url, postgres_url, run_with_db

__all__ = ["database_url", "postgres_url", "run_with_db"]
