"""Contact lists and privacy rules.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``contacts`` and ``privacy_rules``, both owned by a user (cascade on delete)."""
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("contact", sa.String(512), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_contacts_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("owner_id", "contact", name=op.f("uq_contacts_owner_id_contact")),
    )
    op.create_table(
        "privacy_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_privacy_rules_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_rules")),
        sa.UniqueConstraint("owner_id", "target", name=op.f("uq_privacy_rules_owner_id_target")),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("privacy_rules")
    op.drop_table("contacts")
