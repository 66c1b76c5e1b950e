"""Retention: a job says when its files expired, and indexes for the sweep's queries

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("files_expired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_files_expired_at_finished_at", "jobs", ["files_expired_at", "finished_at"], unique=False
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], unique=False)
    op.create_index("ix_uploaded_files_expires_at", "uploaded_files", ["expires_at"], unique=False)
    op.create_index("ix_api_keys_revoked_at", "api_keys", ["revoked_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_api_keys_revoked_at", table_name="api_keys")
    op.drop_index("ix_uploaded_files_expires_at", table_name="uploaded_files")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_index("ix_jobs_files_expired_at_finished_at", table_name="jobs")
    # Native DROP COLUMN (SQLite 3.35+): a batch copy of `jobs` would trip over the rows that
    # reference it once there are any.
    op.drop_column("jobs", "files_expired_at")
