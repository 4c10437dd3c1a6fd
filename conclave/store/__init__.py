"""Persistence: SQLAlchemy models, one repository per domain, Alembic migrations.

SQLite (embedded, Standard Edition) or PostgreSQL (pools), through the same
code. Public API::

    migrate(url) / await migrate_async(url)      # alembic upgrade head
    Database(url)                                # async engine; await db.dispose()
    UserStore(db), RegistrationStore(db), OfflineMessageStore(db, max_per_user=, max_age=)
    ContactStore(db), PrivacyStore(db)           # contact lists and privacy rules
    GenerationStore(db).get(USERS | DIRECTORY)   # change counters, bumped by every write
    Reloader(what, load, generation)             # reload a memory copy when one moves
    generate_password(), password_policy_problems(password)

Every failure raises :class:`StoreError` (or a subclass) with a one-line message.
"""

from __future__ import annotations

from conclave.store.contacts import ContactEntry, ContactStore, PrivacyStore
from conclave.store.database import (
    Database,
    async_url,
    head_revision,
    migrate,
    migrate_async,
)
from conclave.store.errors import ConflictError, NotFoundError, StoreError
from conclave.store.generations import DIRECTORY, USERS, GenerationStore, Reloader
from conclave.store.offline import OfflineMessageStore, StoredMessage
from conclave.store.passwords import generate_password, ha1, password_policy_problems
from conclave.store.registrations import Binding, RegistrationStore
from conclave.store.users import Credentials, UserRecord, UserStore

__all__ = [
    "DIRECTORY",
    "USERS",
    "Binding",
    "ConflictError",
    "ContactEntry",
    "ContactStore",
    "Credentials",
    "Database",
    "GenerationStore",
    "NotFoundError",
    "OfflineMessageStore",
    "PrivacyStore",
    "RegistrationStore",
    "Reloader",
    "StoreError",
    "StoredMessage",
    "UserRecord",
    "UserStore",
    "async_url",
    "generate_password",
    "ha1",
    "head_revision",
    "migrate",
    "migrate_async",
    "password_policy_problems",
]
