"""Monthly statements: a user's ledger for one calendar month (UTC), summed the way a bill is read.

Everything comes from the ledger entries, which are the truth of every balance: the opening
balance is the sum of the entries before the month, and each entry of the month counts once in
exactly one line (credits by kind, charges per model, refunds, expiries, voids, adjustments), so
the closing balance, opening plus the lines, is the sum of the entries before the month's end.
Holds and their releases move no credits (``amount`` 0); they show only in what was held at the
end of the month. The current month's statement runs until now.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import AppError
from mlservice.jobs.tables import Job
from mlservice.types import utcnow
from mlservice.wallet.tables import EntryType, LedgerEntry

_MONTH = re.compile(r"^(?P<year>\d{4})-(?P<month>0[1-9]|1[0-2])$")
# Where each entry type that moves credits goes on a statement (the rest move none).
_CREDITS: dict[str, str] = {
    EntryType.topup: "top-ups",
    EntryType.signup_bonus: "bonus credits",
    EntryType.grant: "bonus credits",
    EntryType.refund: "refunds",
    EntryType.adjustment: "adjustments",
    EntryType.expiry: "expired",
    EntryType.void: "voided",
}
UNKNOWN_MODEL = "(job removed)"


class InvalidMonth(AppError):
    status_code = 400
    code = "invalid_month"


@dataclass(frozen=True, slots=True)
class ModelCharges:
    model: str
    jobs: int
    credits: int  # charged, as a positive number


@dataclass(slots=True)
class Statement:
    month: str
    starts_at: datetime
    ends_at: datetime
    opening_balance: int
    closing_balance: int
    held_at_close: int
    # Credits in (positive) and out (negative) other than charges, by line.
    lines: dict[str, int] = field(default_factory=dict)
    charges: list[ModelCharges] = field(default_factory=list)
    entries: int = 0

    @property
    def charged(self) -> int:
        return sum(c.credits for c in self.charges)

    def as_json(self) -> dict[str, object]:
        return {
            "month": self.month,
            "from": self.starts_at.isoformat(),
            "to": self.ends_at.isoformat(),
            "opening_balance": self.opening_balance,
            "lines": dict(self.lines),
            "charges": [{"model": c.model, "jobs": c.jobs, "credits": c.credits} for c in self.charges],
            "charged": self.charged,
            "closing_balance": self.closing_balance,
            "held_at_close": self.held_at_close,
            "entries": self.entries,
        }

    def as_csv(self) -> str:
        """One row per line: section, item, jobs (charges only), credits (signed)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["section", "item", "jobs", "credits"])
        writer.writerow(["opening balance", self.month, "", self.opening_balance])
        for name, credits in self.lines.items():
            writer.writerow(["credits", name, "", credits])
        for charge in self.charges:
            writer.writerow(["charges", charge.model, charge.jobs, -charge.credits])
        writer.writerow(["closing balance", self.month, "", self.closing_balance])
        writer.writerow(["held at close", self.month, "", self.held_at_close])
        return out.getvalue()


def current_month() -> str:
    return utcnow().strftime("%Y-%m")


def month_bounds(month: str, *, now: datetime | None = None) -> tuple[datetime, datetime]:
    """``YYYY-MM`` as [first instant, first instant of the next month) in UTC; the current month
    ends now. A month that has not begun is refused."""
    found = _MONTH.match(month)
    if found is None:
        raise InvalidMonth("A month is written YYYY-MM, e.g. 2026-11.")
    year, number = int(found["year"]), int(found["month"])
    starts = datetime(year, number, 1, tzinfo=UTC)
    ends = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    current = now or utcnow()
    if starts > current:
        raise InvalidMonth("That month has not begun.", code="month_in_future")
    return starts, min(ends, current)


async def _sums_before(session: AsyncSession, user_id: uuid.UUID, before: datetime) -> tuple[int, int]:
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(LedgerEntry.amount), 0),
                func.coalesce(func.sum(LedgerEntry.held_delta), 0),
            ).where(LedgerEntry.user_id == user_id, LedgerEntry.created_at < before)
        )
    ).one()
    return int(row[0]), int(row[1])


async def monthly_statement(session: AsyncSession, user_id: uuid.UUID, month: str) -> Statement:
    starts, ends = month_bounds(month)
    opening, _ = await _sums_before(session, user_id, starts)
    in_month = (
        LedgerEntry.user_id == user_id,
        LedgerEntry.created_at >= starts,
        LedgerEntry.created_at < ends,
    )
    by_type = await session.execute(
        select(LedgerEntry.type, func.count(), func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(*in_month)
        .group_by(LedgerEntry.type)
    )
    statement = Statement(month, starts, ends, opening, 0, 0)
    moved = 0
    for type_, count, amount in by_type:
        statement.entries += int(count)
        if type_ == EntryType.capture or (type_ not in _CREDITS and not amount):
            continue  # charges are summed per model below; holds and releases move no credits
        line = _CREDITS.get(type_, type_)
        statement.lines[line] = statement.lines.get(line, 0) + int(amount)
        moved += int(amount)
    charges = await session.execute(
        select(Job.model_slug, func.count(), func.coalesce(func.sum(LedgerEntry.amount), 0))
        .select_from(LedgerEntry)
        .outerjoin(Job, Job.id == LedgerEntry.job_id)
        .where(*in_month, LedgerEntry.type == EntryType.capture)
        .group_by(Job.model_slug)
        .order_by(func.sum(LedgerEntry.amount), Job.model_slug)
    )
    for model, count, amount in charges:
        statement.charges.append(ModelCharges(model or UNKNOWN_MODEL, int(count), -int(amount)))
        moved += int(amount)
    _, statement.held_at_close = await _sums_before(session, user_id, ends)
    statement.closing_balance = opening + moved
    return statement


async def statement_months(session: AsyncSession, user_id: uuid.UUID, *, limit: int = 12) -> list[str]:
    """The months (newest first, at most ``limit``) from the user's first ledger entry to now."""
    first = await session.scalar(
        select(func.min(LedgerEntry.created_at)).where(LedgerEntry.user_id == user_id)
    )
    if first is None:
        return []
    now = utcnow()
    year, month = now.year, now.month
    months: list[str] = []
    while len(months) < limit and (year, month) >= (first.year, first.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months
