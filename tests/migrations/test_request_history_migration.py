"""0005 records every job submitted before the request history existed as an accepted request."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import insert, select

from mlservice.catalog.tables import CatalogModel
from mlservice.db import Database
from mlservice.history.tables import PredictionRequest
from mlservice.jobs.tables import Job
from mlservice.migrations.runner import downgrade, upgrade
from mlservice.users.tables import User
from tests.conftest import empty_database


async def test_existing_jobs_become_accepted_requests(database_url: str) -> None:
    await empty_database(database_url)
    await asyncio.to_thread(downgrade, database_url, "0004")
    owner = uuid.uuid4()
    image_job, text_job = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    db = Database(database_url)
    try:
        try:
            async with db.engine.begin() as conn:
                await conn.execute(
                    insert(User.__table__).values(id=owner, email="old@example.com", hashed_password="x")
                )
                await conn.execute(
                    insert(CatalogModel.__table__).values(
                        slug="old-model", title="Old", task="t", input_kind="image", price=1
                    )
                )
                common = {
                    "user_id": owner,
                    "model_slug": "old-model",
                    "status": "succeeded",
                    "cost": 1,
                    "created_at": at,
                    "input_text": None,
                    "request_id": None,
                }
                await conn.execute(
                    insert(Job.__table__),
                    [
                        {
                            **common,
                            "id": image_job,
                            "input_meta": {"format": "png", "width": 640, "height": 480, "bytes": 5000},
                            "request_id": "req-1",
                        },
                        {
                            **common,
                            "id": text_job,
                            "input_meta": {"chars": 2},
                            "input_text": "hé",
                            "created_at": at,
                        },
                    ],
                )
        finally:
            await asyncio.to_thread(upgrade, database_url)

        async with db.session() as session:
            rows = {r.job_id: r for r in await session.scalars(select(PredictionRequest))}
        assert set(rows) == {image_job, text_job}
        image, text = rows[image_job], rows[text_job]
        assert (image.http_status, image.error_code, image.replayed) == (201, None, False)
        assert (image.input_bytes, image.image_width, image.image_height) == (5000, 640, 480)
        assert (image.user_id, image.model_slug, image.created_at, image.request_id) == (
            owner,
            "old-model",
            at,
            "req-1",
        )
        assert (text.input_bytes, text.image_width, text.image_height) == (len("hé".encode()), None, None)
    finally:
        await db.dispose()
        await empty_database(database_url)
