"""Change counters for the tables a server keeps in memory.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``store_generation`` with a zero counter for ``users`` and ``directory``."""
    table = op.create_table(
        "store_generation",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_store_generation")),
    )
    # Seeded so that every bump is an UPDATE of an existing row; the stores
    # still insert a missing row (a table emptied by hand starts again at 1).
    op.bulk_insert(table, [{"name": "users", "value": 0}, {"name": "directory", "value": 0}])


def downgrade() -> None:
    """Drop the counters."""
    op.drop_table("store_generation")
