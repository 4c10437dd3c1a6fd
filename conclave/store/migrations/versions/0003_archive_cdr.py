"""Archiving policy overrides and call detail records.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``archive_policies`` and ``cdrs``."""
    op.create_table(
        "archive_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("name", sa.String(320), nullable=False),
        sa.Column("internal", sa.Boolean(), nullable=True),
        sa.Column("federated", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_policies")),
        sa.UniqueConstraint("scope", "name", name=op.f("uq_archive_policies_scope_name")),
    )
    op.create_table(
        "cdrs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("caller", sa.String(512), nullable=False),
        sa.Column("callee", sa.String(512), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdrs")),
    )
    op.create_index(op.f("ix_cdrs_call_id"), "cdrs", ["call_id"])
    op.create_index(op.f("ix_cdrs_started_at"), "cdrs", ["started_at"])
    op.create_index("ix_cdrs_caller_started_at", "cdrs", ["caller", "started_at"])
    op.create_index("ix_cdrs_callee_started_at", "cdrs", ["callee", "started_at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_cdrs_callee_started_at", table_name="cdrs")
    op.drop_index("ix_cdrs_caller_started_at", table_name="cdrs")
    op.drop_index(op.f("ix_cdrs_started_at"), table_name="cdrs")
    op.drop_index(op.f("ix_cdrs_call_id"), table_name="cdrs")
    op.drop_table("cdrs")
    op.drop_table("archive_policies")
