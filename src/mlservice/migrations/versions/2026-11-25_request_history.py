"""request history, and the batching wait admins set per model

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prediction_requests",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("model_slug", sa.String(length=64), nullable=True),
        sa.Column("http_status", sa.SmallInteger(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("input_bytes", sa.BigInteger(), nullable=True),
        sa.Column("image_width", sa.Integer(), nullable=True),
        sa.Column("image_height", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("replayed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_prediction_requests_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_prediction_requests_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_requests")),
    )
    with op.batch_alter_table("prediction_requests", schema=None) as batch_op:
        batch_op.create_index("ix_prediction_requests_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_prediction_requests_job_id", ["job_id"], unique=False)
        batch_op.create_index(
            "ix_prediction_requests_model_slug_created_at", ["model_slug", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_prediction_requests_user_id_created_at", ["user_id", "created_at"], unique=False
        )

    _record_existing_jobs()

    # Filled by the catalog sync at the next start, from each installed predictor.
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_wait_ms", sa.Integer(), nullable=True))


def _record_existing_jobs() -> None:
    """Every job submitted before the history existed was an accepted request: record it as one."""
    if op.get_bind().dialect.name == "postgresql":
        meta = "(input_meta->>'{}')::{}"
        text_bytes = "octet_length(input_text)"
    else:
        meta = "CAST(json_extract(input_meta, '$.{}') AS {})"
        text_bytes = "length(CAST(input_text AS BLOB))"
    op.execute(
        "INSERT INTO prediction_requests (created_at, user_id, model_slug, http_status, error_code,"
        " input_bytes, image_width, image_height, request_id, job_id, replayed)"
        f" SELECT created_at, user_id, model_slug, 201, NULL,"
        f" COALESCE({meta.format('bytes', 'bigint')}, {text_bytes}),"
        f" {meta.format('width', 'integer')}, {meta.format('height', 'integer')},"
        " request_id, id, false FROM jobs"
    )


def downgrade() -> None:
    # Not in batch mode: SQLite (3.35+) drops a column in place, where a batch would copy `models`
    # and fail to drop the original while jobs refer to it.
    op.drop_column("models", "max_wait_ms")

    with op.batch_alter_table("prediction_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_requests_user_id_created_at")
        batch_op.drop_index("ix_prediction_requests_model_slug_created_at")
        batch_op.drop_index("ix_prediction_requests_job_id")
        batch_op.drop_index("ix_prediction_requests_created_at")

    op.drop_table("prediction_requests")
