"""Credit grants: every credit belongs to a paid or bonus grant; each grant movement is a posting

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

How existing wallets move over, with no change to any user's available credits: the wallet rows,
their ledger entries and holds are left exactly as they are (``balance``, ``held`` and so
``available`` do not move, and no entry is added). What a wallet holds is split into at most two
grants without expiry and at the default priority, both sourced ``migrated``:

- ``paid``: the credits bought, as far as the balance still has them: min(balance, sum of the
  wallet's top-ups);
- ``bonus``: the rest of the balance (the signup bonus and administrators' credits).

The earlier ledger did not say which credits a charge took; counting what was spent against the
bonus first is the order spending follows from now on (bonus before paid at equal rank), and it is
the split that leaves users the most paid credit. Each grant opens with one posting of its amount,
the only posting without a ledger entry: it sums the entries before this migration. Each open hold
keeps its credits held: its amount is drawn on the bonus grant first, then the paid one, as
postings of the hold's own ledger entry, so its capture or release later moves exactly those.
Afterwards every wallet's balance is the sum of its grants' remaining credits and its held the sum
of their held credits, as the code checks from now on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "credit_grants",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_by", sa.String(length=320), nullable=True),
        sa.CheckConstraint("held >= 0", name=op.f("ck_credit_grants_held_non_negative")),
        sa.CheckConstraint("held <= remaining", name=op.f("ck_credit_grants_held_within_remaining")),
        sa.CheckConstraint("remaining <= amount", name=op.f("ck_credit_grants_remaining_within_amount")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_grants_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
    )
    op.create_index(
        "ix_credit_grants_live",
        "credit_grants",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("remaining > 0"),
        sqlite_where=sa.text("remaining > 0"),
    )
    op.create_table(
        "grant_postings",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("entry_id", ID, nullable=True),
        sa.Column("grant_id", ID, nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("held_delta", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_grant_postings_entry_id_ledger_entries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["credit_grants.id"],
            name=op.f("fk_grant_postings_grant_id_credit_grants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_grant_postings_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grant_postings")),
    )
    op.create_index(op.f("ix_grant_postings_entry_id"), "grant_postings", ["entry_id"], unique=False)
    op.create_index(op.f("ix_grant_postings_grant_id"), "grant_postings", ["grant_id"], unique=False)
    op.create_index(op.f("ix_grant_postings_job_id"), "grant_postings", ["job_id"], unique=False)
    op.create_table(
        "promo_codes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("max_uses", sa.BigInteger(), nullable=False),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.Column("redeem_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("grant_days", sa.Integer(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("uses <= max_uses", name=op.f("ck_promo_codes_uses_within_max")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promo_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_promo_codes_code")),
    )
    op.create_table(
        "promo_redemptions",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("code_id", ID, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("grant_id", ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["code_id"],
            ["promo_codes.id"],
            name=op.f("fk_promo_redemptions_code_id_promo_codes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["credit_grants.id"],
            name=op.f("fk_promo_redemptions_grant_id_credit_grants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_promo_redemptions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promo_redemptions")),
    )
    op.create_index(
        "ix_promo_redemptions_one_per_user", "promo_redemptions", ["code_id", "user_id"], unique=True
    )
    _split_wallets()


def _split_wallets() -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    wallets = sa.Table("wallets", meta, autoload_with=bind)
    ledger = sa.Table("ledger_entries", meta, autoload_with=bind)
    holds = sa.Table("holds", meta, autoload_with=bind)
    grants = sa.Table("credit_grants", meta, autoload_with=bind)
    postings = sa.Table("grant_postings", meta, autoload_with=bind)
    now = bind.execute(sa.select(sa.func.current_timestamp())).scalar_one()
    bought = dict(
        bind.execute(
            sa.select(ledger.c.user_id, sa.func.sum(ledger.c.amount))
            .where(ledger.c.type == "topup")
            .group_by(ledger.c.user_id)
        ).all()
    )
    for user_id, balance, held in bind.execute(
        sa.select(wallets.c.user_id, wallets.c.balance, wallets.c.held).where(wallets.c.balance > 0)
    ).all():
        paid = min(balance, int(bought.get(user_id) or 0))
        parts = [(kind, amount) for kind, amount in (("bonus", balance - paid), ("paid", paid)) if amount > 0]
        open_holds = bind.execute(
            sa.select(holds.c.job_id, holds.c.amount)
            .where(holds.c.user_id == user_id, holds.c.status == "open", holds.c.amount > 0)
            .order_by(holds.c.id)
        ).all()
        # What each grant will hold: the open holds drawn on in spending order (bonus first).
        grant_ids: list[int] = []
        free = [amount for _, amount in parts]
        draws: list[tuple[object, int, int]] = []  # (job id, index of the grant, credits)
        for job_id, amount in open_holds:
            left = amount
            for i in range(len(parts)):
                take = min(free[i], left)
                if take > 0:
                    draws.append((job_id, i, take))
                    free[i] -= take
                    left -= take
            assert left == 0, f"wallet {user_id} holds more than its balance"
        for i, (kind, amount) in enumerate(parts):
            grant_id = bind.execute(
                grants.insert()
                .values(
                    user_id=user_id,
                    kind=kind,
                    source="migrated",
                    priority=50,
                    expires_at=None,
                    amount=amount,
                    remaining=amount,
                    held=amount - free[i],
                    note="Credits before grants (migration 0013)",
                    created_at=now,
                )
                .returning(grants.c.id)
            ).scalar_one()
            grant_ids.append(grant_id)
            bind.execute(
                postings.insert().values(
                    entry_id=None, grant_id=grant_id, job_id=None, amount=amount, held_delta=0
                )
            )
        for job_id, i, take in draws:
            entry_id = bind.execute(
                sa.select(sa.func.max(ledger.c.id)).where(ledger.c.job_id == job_id, ledger.c.type == "hold")
            ).scalar_one()
            bind.execute(
                postings.insert().values(
                    entry_id=entry_id, grant_id=grant_ids[i], job_id=job_id, amount=0, held_delta=take
                )
            )
        assert sum(free) == balance - held, f"wallet {user_id}: held credits do not match its open holds"


def downgrade() -> None:
    # The wallets, entries and holds were never changed: dropping the grants loses no credit.
    op.drop_table("promo_redemptions")
    op.drop_table("promo_codes")
    op.drop_index(op.f("ix_grant_postings_job_id"), table_name="grant_postings")
    op.drop_index(op.f("ix_grant_postings_grant_id"), table_name="grant_postings")
    op.drop_index(op.f("ix_grant_postings_entry_id"), table_name="grant_postings")
    op.drop_table("grant_postings")
    op.drop_index("ix_credit_grants_live", table_name="credit_grants")
    op.drop_table("credit_grants")
