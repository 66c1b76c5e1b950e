"""Backpressure: a queue cap per model, and an index of the unfinished jobs a user's cap counts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    # No CHECK (max_queued_jobs >= 0): on SQLite it would rebuild the models table, which the jobs
    # reference; the admin API refuses a negative cap.
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_queued_jobs", sa.Integer(), nullable=True))
    op.create_index(
        "ix_jobs_unfinished_user_id",
        "jobs",
        ["user_id"],
        unique=False,
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished_user_id", table_name="jobs")
    # Not a batch: SQLite (3.35+) drops a column in place, where a batch would rebuild the table.
    op.drop_column("models", "max_queued_jobs")
