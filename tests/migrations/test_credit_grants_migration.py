"""0014 splits each wallet's credits into grants without changing what anyone can spend."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select

from mlservice.catalog.tables import CatalogModel
from mlservice.db import Database
from mlservice.jobs.tables import Job
from mlservice.migrations.runner import downgrade, upgrade
from mlservice.users.tables import User
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import CreditGrant, Hold, LedgerEntry, Wallet
from tests.conftest import empty_database
from tests.fixtures.grants import check_grants

AT = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def _entry(
    user_id: uuid.UUID, type_: str, amount: int, held_delta: int, job_id: Any = None
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "type": type_,
        "amount": amount,
        "held_delta": held_delta,
        "balance_after": 0,  # not what this migration reads
        "held_after": 0,
        "job_id": job_id,
        "note": None,
        "created_at": AT,
    }


async def test_wallets_become_grants_with_the_same_credits(database_url: str) -> None:
    await empty_database(database_url)
    await asyncio.to_thread(downgrade, database_url, "0013")
    buyer, holder, broke = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    spent, open_one, open_two = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    db = Database(database_url)
    try:
        try:
            async with db.engine.begin() as conn:
                for user_id in (buyer, holder, broke):
                    await conn.execute(
                        insert(User.__table__).values(
                            id=user_id, email=f"{user_id.hex[:8]}@example.com", hashed_password="x"
                        )
                    )
                await conn.execute(
                    insert(CatalogModel.__table__).values(
                        slug="old-model", title="Old", task="t", input_kind="text", price=1
                    )
                )
                job = {"model_slug": "old-model", "created_at": AT, "params": {}, "input_meta": {}}
                await conn.execute(
                    insert(Job.__table__),
                    [
                        {**job, "id": spent, "user_id": buyer, "status": "succeeded", "cost": 30},
                        {**job, "id": open_one, "user_id": buyer, "status": "queued", "cost": 20},
                        {**job, "id": open_two, "user_id": holder, "status": "running", "cost": 100},
                    ],
                )
                # buyer: 100 bonus + 50 bought - 30 spent = 120, 20 of it held; holder: all 100 held.
                await conn.execute(
                    insert(Wallet.__table__),
                    [
                        {"user_id": buyer, "balance": 120, "held": 20, "updated_at": AT},
                        {"user_id": holder, "balance": 100, "held": 100, "updated_at": AT},
                        {"user_id": broke, "balance": 0, "held": 0, "updated_at": AT},
                    ],
                )
                await conn.execute(
                    insert(LedgerEntry.__table__),
                    [
                        _entry(buyer, "signup_bonus", 100, 0),
                        _entry(buyer, "topup", 50, 0),
                        _entry(buyer, "hold", 0, 30, spent),
                        _entry(buyer, "capture", -30, -30, spent),
                        _entry(buyer, "hold", 0, 20, open_one),
                        _entry(holder, "signup_bonus", 100, 0),
                        _entry(holder, "hold", 0, 100, open_two),
                    ],
                )
                await conn.execute(
                    insert(Hold.__table__),
                    [
                        {
                            "user_id": buyer,
                            "job_id": spent,
                            "amount": 30,
                            "status": "captured",
                            "created_at": AT,
                        },
                        {
                            "user_id": buyer,
                            "job_id": open_one,
                            "amount": 20,
                            "status": "open",
                            "created_at": AT,
                        },
                        {
                            "user_id": holder,
                            "job_id": open_two,
                            "amount": 100,
                            "status": "open",
                            "created_at": AT,
                        },
                    ],
                )
        finally:
            await asyncio.to_thread(upgrade, database_url)

        async with db.session() as session:
            last_entry = int(await session.scalar(select(func.max(LedgerEntry.id))) or 0)
            wallets = {w.user_id: (w.balance, w.held) for w in await session.scalars(select(Wallet))}
            found = [
                (g.user_id, g.kind, g.source, g.remaining, g.held, g.expires_at)
                for g in await session.scalars(select(CreditGrant).order_by(CreditGrant.id))
            ]
        assert wallets == {buyer: (120, 20), holder: (100, 100), broke: (0, 0)}  # nothing moved
        assert found == [
            (buyer, "bonus", "migrated", 70, 20, None),
            (buyer, "paid", "migrated", 50, 0, None),
            (holder, "bonus", "migrated", 100, 100, None),
        ]
        for user_id in (buyer, holder, broke):
            await check_grants(db, user_id, entries_after=last_entry)

        # The open holds resolve against the grants they were given.
        async with db.session(write=True) as session:
            assert await wallet_service.capture_hold(session, open_one) is not None
            assert await wallet_service.release_hold(session, open_two) is not None
        async with db.session() as session:
            after = [
                (g.kind, g.remaining, g.held)
                for g in await session.scalars(select(CreditGrant).order_by(CreditGrant.id))
            ]
        assert after == [("bonus", 50, 0), ("paid", 50, 0), ("bonus", 100, 0)]
        # A charge from before grants, refunded, comes back as a grant of its own.
        async with db.session(write=True) as session:
            assert await wallet_service.refund(session, spent) is not None
        async with db.session() as session:
            assert await session.scalar(select(Wallet.balance).where(Wallet.user_id == buyer)) == 130
        for user_id in (buyer, holder):
            await check_grants(db, user_id, entries_after=last_entry)
    finally:
        await db.dispose()
        await empty_database(database_url)
