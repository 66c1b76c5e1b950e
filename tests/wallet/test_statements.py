"""Monthly statements (``GET /api/wallet/statement?month=YYYY-MM``): opening balance, credits by kind,
charges per model, closing balance; their totals are the ledger's, month after month."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from mlservice.types import utcnow
from mlservice.wallet.statements import current_month, month_bounds
from mlservice.wallet.tables import LedgerEntry
from tests.conftest import Service, wait_for_job
from tests.fixtures.api import submit, totals, wallet


def this_month() -> str:
    return current_month()


async def statement(service: Service, headers: dict[str, str], month: str) -> dict[str, Any]:
    r = await service.client.get("/api/wallet/statement", params={"month": month}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def ledger_sum(service: Service, headers: dict[str, str]) -> int:
    r = await service.client.get("/api/wallet/transactions", params={"limit": 200}, headers=headers)
    return sum(e["amount"] for e in r.json()["items"])


async def test_a_months_statement_adds_up_to_the_ledger(service: Service) -> None:
    headers = await service.user()
    other = await service.user()  # whose entries never show
    r = await service.client.post(
        "/api/wallet/refill", json={"amount": 50}, headers=headers | {"Idempotency-Key": "s-1"}
    )
    assert r.status_code == 200, r.text
    jobs = [(await submit(service, headers, f"job {i}")).json()["id"] for i in range(2)]
    failed = (await submit(service, headers, "boom")).json()["id"]  # released: not charged
    for job in [*jobs, failed]:
        await wait_for_job(service.client, headers, job)
    await submit(service, other, "theirs")

    body = await statement(service, headers, this_month())
    price = 2 * 3
    assert body["month"] == this_month()
    assert body["opening_balance"] == 0
    assert body["lines"] == {"bonus credits": 100, "top-ups": 50}
    assert body["charges"] == [{"model": "test-echo", "jobs": 2, "credits": price}]
    assert body["charged"] == price
    assert body["closing_balance"] == 150 - price == (await wallet(service, headers))["balance"]
    assert body["closing_balance"] == await ledger_sum(service, headers)
    assert body["held_at_close"] == 0
    assert body["entries"] == 2 + 3 * 2  # bonus, top-up; a hold and its capture or release per job

    # Without a month: the current one.
    r = await service.client.get("/api/wallet/statement", params={"format": "csv"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert f'filename="mlservice-statement-{this_month()}.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["section"], row["item"], row["credits"]) for row in rows] == [
        ("opening balance", this_month(), "0"),
        ("credits", "bonus credits", "100"),
        ("credits", "top-ups", "50"),
        ("charges", "test-echo", str(-price)),
        ("closing balance", this_month(), str(150 - price)),
        ("held at close", this_month(), "0"),
    ]
    assert sum(int(row["credits"]) for row in rows[:-2]) == int(rows[-2]["credits"])


async def test_one_months_closing_balance_opens_the_next(service: Service) -> None:
    headers = await service.user()
    user_id = uuid.UUID((await service.client.get("/api/users/me", headers=headers)).json()["id"])
    job = (await submit(service, headers, "last month")).json()["id"]
    await wait_for_job(service.client, headers, job)
    # What happened so far, moved into a month of its own (two months back, whatever today is).
    now = utcnow()
    earlier = (now.year, now.month - 2) if now.month > 2 else (now.year - 1, now.month + 10)
    moved_to = datetime(earlier[0], earlier[1], 15, tzinfo=UTC)
    async with service.db.session(write=True) as session:
        await session.execute(
            update(LedgerEntry).where(LedgerEntry.user_id == user_id).values(created_at=moved_to)
        )
    then = moved_to.strftime("%Y-%m")
    r = await service.client.post(
        "/api/wallet/refill", json={"amount": 20}, headers=headers | {"Idempotency-Key": "s-2"}
    )
    assert r.status_code == 200, r.text

    old = await statement(service, headers, then)
    assert (old["opening_balance"], old["closing_balance"]) == (0, 97)
    assert old["lines"] == {"bonus credits": 100}
    assert old["charges"] == [{"model": "test-echo", "jobs": 1, "credits": 3}]
    between = earlier[1] + 1 if earlier[1] < 12 else 1
    quiet = f"{earlier[0] + (earlier[1] == 12):04d}-{between:02d}"
    gap = await statement(service, headers, quiet)  # nothing happened: the balance carries over
    assert (gap["opening_balance"], gap["closing_balance"], gap["entries"]) == (97, 97, 0)
    now_statement = await statement(service, headers, this_month())
    assert now_statement["opening_balance"] == 97
    assert now_statement["lines"] == {"top-ups": 20}
    assert now_statement["closing_balance"] == 117 == totals(await wallet_body(service, headers))["balance"]

    # The web wallet links this month's and the earlier months' statements.
    page = await service.client.get("/wallet", headers=headers)
    assert page.status_code == 200
    for month in (this_month(), quiet, then):
        assert f"/api/wallet/statement?month={month}&amp;format=csv" in page.text


async def wallet_body(service: Service, headers: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = (await service.client.get("/api/wallet", headers=headers)).json()
    return body


async def test_bad_and_future_months_are_refused(service: Service) -> None:
    headers = await service.user()
    for month, code in (
        ("2026-13", "invalid_month"),
        ("26-01", "invalid_month"),
        ("2999-01", "month_in_future"),
    ):
        r = await service.client.get("/api/wallet/statement", params={"month": month}, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == code
    assert (await service.client.get("/api/wallet/statement")).status_code == 401
    r = await service.client.get("/api/wallet/statement?format=xml", headers=headers)
    assert r.status_code == 422


def test_month_bounds() -> None:
    assert month_bounds("2025-12", now=datetime(2026, 3, 1, tzinfo=UTC)) == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    now = datetime(2026, 3, 9, 12, tzinfo=UTC)
    assert month_bounds("2026-03", now=now) == (datetime(2026, 3, 1, tzinfo=UTC), now)
