"""Persistence: SQLAlchemy models, one repository per domain, Alembic migrations.

SQLite (embedded, Standard Edition) or PostgreSQL (pools), through the same
code. Public API::

    migrate(url) / await migrate_async(url)      # alembic upgrade head
    Database(url)                                # async engine; await db.dispose()
    UserStore(db), RegistrationStore(db), OfflineMessageStore(db, max_per_user=, max_age=)
    ContactStore(db), PrivacyStore(db)           # contact lists and privacy rules
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
from conclave.store.offline import OfflineMessageStore, StoredMessage
from conclave.store.passwords import generate_password, ha1, password_policy_problems
from conclave.store.registrations import Binding, RegistrationStore
from conclave.store.users import Credentials, UserRecord, UserStore

__all__ = [
    "Binding",
    "ConflictError",
    "ContactEntry",
    "ContactStore",
    "Credentials",
    "Database",
    "NotFoundError",
    "OfflineMessageStore",
    "PrivacyStore",
    "RegistrationStore",
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
