"""Live jobs: a deadline to cancel at, progress reported while running, the predictor's log lines

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("progress", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("progress_message", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("logs", sa.Text(), nullable=True))
    # The sweep's: unfinished jobs with a deadline, soonest first.
    op.create_index(
        "ix_jobs_unfinished_cancel_at",
        "jobs",
        ["cancel_at"],
        unique=False,
        postgresql_where=sa.text("cancel_at IS NOT NULL AND status IN ('queued', 'running')"),
        sqlite_where=sa.text("cancel_at IS NOT NULL AND status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished_cancel_at", table_name="jobs")
    # Native DROP COLUMN (SQLite 3.35+), not a batch copy of a table others reference.
    for column in ("logs", "progress_message", "progress", "cancel_at"):
        op.drop_column("jobs", column)
