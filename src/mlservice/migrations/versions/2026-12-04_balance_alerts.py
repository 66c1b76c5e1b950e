"""Low-balance alerts: per-user settings, the alerts sent, Telegram's outbox, account webhooks

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

``wallets.low_balance_below`` starts empty on every wallet: "not known yet", so each wallet's
first charge after the upgrade checks its thresholds and sets it (a wallet already below one then
gets its alert with that charge).
``webhook_deliveries.job_id`` becomes optional: an account event (``balance.low``) has no job.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Native ADD COLUMN (SQLite 3.35+), not a batch copy of a table others reference.
    op.add_column("wallets", sa.Column("low_balance_below", sa.BigInteger(), nullable=True))
    op.create_table(
        "alert_settings",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=True),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("telegram", sa.Boolean(), nullable=False),
        sa.Column("alerted", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "balance_alerts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_balance_alerts_user_id_id", "balance_alerts", ["user_id", "id"], unique=False)
    op.create_table(
        "chat_messages",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_chat_messages_status_next_attempt_at",
        "chat_messages",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(op.f("ix_chat_messages_user_id"), "chat_messages", ["user_id"], unique=False)
    # Nothing references webhook_deliveries: a batch copy on SQLite is safe.
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.alter_column("job_id", existing_type=sa.Uuid(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM webhook_deliveries WHERE job_id IS NULL")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.alter_column("job_id", existing_type=sa.Uuid(), nullable=False)
    op.drop_index(op.f("ix_chat_messages_user_id"), table_name="chat_messages")
    op.drop_index("ix_chat_messages_status_next_attempt_at", table_name="chat_messages")
    op.drop_table("chat_messages")
    op.drop_index("ix_balance_alerts_user_id_id", table_name="balance_alerts")
    op.drop_table("balance_alerts")
    op.drop_table("alert_settings")
    op.drop_column("wallets", "low_balance_below")
