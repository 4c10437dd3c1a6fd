"""Pool pairing: the partner pool's backup copy, and which pools this one serves for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``pool_backups`` and ``pool_failovers``."""
    op.create_table(
        "pool_backups",
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heard_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pool", name=op.f("pk_pool_backups")),
    )
    op.create_table(
        "pool_failovers",
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("users", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pool", name=op.f("pk_pool_failovers")),
    )


def downgrade() -> None:
    """Drop both."""
    op.drop_table("pool_failovers")
    op.drop_table("pool_backups")
