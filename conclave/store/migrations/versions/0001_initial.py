"""Initial schema: users, registrations, offline messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three tables of the Standard Edition back end."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", "domain", name=op.f("uq_users_name_domain")),
    )
    op.create_table(
        "registrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aor", sa.String(512), nullable=False),
        sa.Column("contact", sa.String(2048), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("q", sa.Float(), server_default="1.0", nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("cseq", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(255), nullable=True),
        sa.Column("reg_id", sa.Integer(), nullable=True),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.Column("connection_id", sa.String(128), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
        sa.UniqueConstraint("aor", "contact", name=op.f("uq_registrations_aor_contact")),
    )
    op.create_index(op.f("ix_registrations_aor"), "registrations", ["aor"])
    op.create_index(op.f("ix_registrations_expires_at"), "registrations", ["expires_at"])
    op.create_table(
        "offline_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(512), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("date_header", sa.String(128), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_messages")),
    )
    op.create_index(
        "ix_offline_messages_recipient_received_at",
        "offline_messages",
        ["recipient", "received_at"],
    )
    op.create_index(op.f("ix_offline_messages_received_at"), "offline_messages", ["received_at"])


def downgrade() -> None:
    """Drop everything the upgrade created."""
    op.drop_index(op.f("ix_offline_messages_received_at"), table_name="offline_messages")
    op.drop_index("ix_offline_messages_recipient_received_at", table_name="offline_messages")
    op.drop_table("offline_messages")
    op.drop_index(op.f("ix_registrations_expires_at"), table_name="registrations")
    op.drop_index(op.f("ix_registrations_aor"), table_name="registrations")
    op.drop_table("registrations")
    op.drop_table("users")
