from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base, BigIntPK
from mlservice.types import UTCDateTime, utcnow


class EntryType(enum.StrEnum):
    signup_bonus = "signup_bonus"
    topup = "topup"
    hold = "hold"
    capture = "capture"
    release = "release"
    refund = "refund"
    adjustment = "adjustment"
    # What was left of a grant when it expired (or was voided), taken off the balance.
    expiry = "expiry"
    # An unspent grant taken back by an administrator.
    void = "void"
    # Bonus credits granted by an administrator or a promotion code (a correction is an adjustment).
    grant = "grant"


class HoldStatus(enum.StrEnum):
    open = "open"
    captured = "captured"
    released = "released"
    # Captured, then given back to the grants it was drawn from.
    refunded = "refunded"


class GrantKind(enum.StrEnum):
    paid = "paid"
    bonus = "bonus"


class GrantSource(enum.StrEnum):
    topup = "topup"
    signup_bonus = "signup_bonus"
    admin = "admin"
    promo = "promo"
    # The credits a wallet had when grants were introduced (migration 0013).
    migrated = "migrated"


DEFAULT_PRIORITY = 50


class Wallet(Base):
    """Running totals of a user's ledger, kept in the row that is locked before every debit.

    ``balance`` is the sum of the entries' ``amount``; ``held`` the sum of their ``held_delta``,
    i.e. the open holds. Both are checked by the database, so no bug can drive them negative.
    """

    __tablename__ = "wallets"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_non_negative"),
        CheckConstraint("held >= 0", name="held_non_negative"),
        CheckConstraint("held <= balance", name="held_within_balance"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # A low-balance check is due once ``available`` drops below this: the highest alert threshold
    # not yet crossed (0: none left); NULL when not known yet (see :mod:`mlservice.wallet.alerts`).
    low_balance_below: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def available(self) -> int:
        return self.balance - self.held


class LedgerEntry(Base):
    """One immutable change to a wallet: ``amount`` moves the balance, ``held_delta`` the holds."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    held_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    held_after: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Hold(Base):
    """Credits reserved for one job; resolves exactly once (captured or released)."""

    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=HoldStatus.open)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CreditGrant(Base):
    """Credits from one source: a top-up (``paid``) or a bonus, with an optional expiry and a priority.

    ``remaining`` and ``held`` are running totals of the grant's postings, as the wallet's are of
    the ledger: every credit of ``wallets.balance`` is in exactly one grant's ``remaining``, every
    held credit in one grant's ``held``. Spending draws in the order of :data:`SPENDING_ORDER`.
    """

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint("held >= 0", name="held_non_negative"),
        CheckConstraint("held <= remaining", name="held_within_remaining"),
        CheckConstraint("remaining <= amount", name="remaining_within_amount"),
        # The grants a spend may draw on: a user's with credit left.
        Index(
            "ix_credit_grants_live",
            "user_id",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=DEFAULT_PRIORITY)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    note: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set when the grant expired or was voided and what was left of it removed.
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    voided_by: Mapped[str | None] = mapped_column(String(320))

    @property
    def free(self) -> int:
        return self.remaining - self.held


class GrantPosting(Base):
    """One immutable movement of one grant, part of a ledger entry: a draw (a hold's
    ``held_delta``), a capture, a return, a refund, an expiry, or the grant's opening credit.

    The postings of an entry add up to the entry's ``amount`` and ``held_delta``; a grant's add up
    to its ``remaining`` and ``held``. ``entry_id`` is empty only for the opening posting of a grant
    migration 0013 made from a wallet's earlier entries, which it sums up.
    """

    __tablename__ = "grant_postings"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    entry_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("ledger_entries.id", ondelete="CASCADE"),
        index=True,
    )
    grant_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("credit_grants.id", ondelete="CASCADE"),
        index=True,
    )
    # The job whose hold this moves (a capture, release or refund finds its draws by it).
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    amount: Mapped[int] = mapped_column(BigInteger)
    held_delta: Mapped[int] = mapped_column(BigInteger, default=0)


class PromoCode(Base):
    """A code users redeem for a bonus grant: at most ``max_uses`` times in all, once per user,
    until ``redeem_until``; each grant expires ``grant_days`` after its redemption (if set)."""

    __tablename__ = "promo_codes"
    __table_args__ = (CheckConstraint("uses <= max_uses", name="uses_within_max"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    max_uses: Mapped[int] = mapped_column(BigInteger)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    redeem_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    grant_days: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=DEFAULT_PRIORITY)
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PromoRedemption(Base):
    """One user's redemption of one code (unique: once per user), with the grant it made."""

    __tablename__ = "promo_redemptions"
    __table_args__ = (Index("ix_promo_redemptions_one_per_user", "code_id", "user_id", unique=True),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    code_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), ForeignKey("promo_codes.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    grant_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), ForeignKey("credit_grants.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertSettings(Base):
    """How a user is told that credits run low: their own thresholds (NULL: the defaults), an
    account webhook for ``balance.low`` events, Telegram on or off, and which thresholds the
    available credits are below now and were already announced (``alerted``): once per crossing."""

    __tablename__ = "alert_settings"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    thresholds: Mapped[list[int] | None] = mapped_column(JSON)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    telegram: Mapped[bool] = mapped_column(Boolean, default=True)
    alerted: Mapped[list[int]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BalanceAlert(Base):
    """One low-balance alert as it was sent: the lowest threshold newly crossed and what was left."""

    __tablename__ = "balance_alerts"
    __table_args__ = (Index("ix_balance_alerts_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    threshold: Mapped[int] = mapped_column(BigInteger)
    available: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
