"""Webhook subscriptions, signing secrets and the delivery log a job's owner can read."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.jobs.service import get_owned_job
from mlservice.orm import delete_some
from mlservice.types import utcnow
from mlservice.webhooks.destinations import InvalidWebhook, check_url
from mlservice.webhooks.outbox import EVENTS
from mlservice.webhooks.signing import new_secret
from mlservice.webhooks.tables import WebhookDelivery, WebhookSecret


@dataclass(frozen=True)
class Subscription:
    url: str
    # None: every event.
    events: list[str] | None


def subscription(
    url: str | None, events: Iterable[str] | None, *, allow_private: bool
) -> Subscription | None:
    """A job's webhook from a request's fields, or None without one; 422 when they are wrong.

    ``events`` are event names, each item possibly comma-separated (``start,completed``).
    """
    names = [name.strip() for item in events or () for name in item.split(",") if name.strip()]
    if not url or not url.strip():
        if names:
            raise InvalidWebhook("`webhook_events_filter` needs a `webhook`.")
        return None
    unknown = sorted({name for name in names if name not in EVENTS})
    if unknown:
        raise InvalidWebhook(
            f"Unknown webhook events: {', '.join(unknown)}; the events are {', '.join(EVENTS)}.",
            code="invalid_webhook_events",
        )
    chosen = [event for event in EVENTS if event in names] if names else None
    return Subscription(check_url(url, allow_private=allow_private), chosen)


async def user_secrets(session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Each user's signing secret, made for those who have none yet (in the caller's unit of work)."""
    wanted = set(user_ids)
    if not wanted:
        return {}
    query = select(WebhookSecret.user_id, WebhookSecret.secret).where(WebhookSecret.user_id.in_(wanted))
    found: dict[uuid.UUID, str] = {row.user_id: row.secret for row in await session.execute(query)}
    missing = wanted - found.keys()
    if missing:
        dialect = (await session.connection()).dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        now = utcnow()
        await session.execute(
            insert(WebhookSecret)
            .values([{"user_id": user_id, "secret": new_secret(), "created_at": now} for user_id in missing])
            # Made at the same moment by someone else (a request, another deliverer): theirs wins.
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        found |= {row.user_id: row.secret for row in await session.execute(query)}
    return found


async def secret_of(session: AsyncSession, user_id: uuid.UUID) -> str:
    return (await user_secrets(session, [user_id]))[user_id]


async def rotate_secret(session: AsyncSession, user_id: uuid.UUID) -> str:
    """A new secret for ``user_id``: attempts from now on are signed with it, retries included."""
    await secret_of(session, user_id)
    secret = new_secret()
    await session.execute(
        update(WebhookSecret)
        .where(WebhookSecret.user_id == user_id)
        .values(secret=secret, created_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return secret


async def job_deliveries(
    session: AsyncSession, user_id: uuid.UUID, job_id: uuid.UUID
) -> Sequence[WebhookDelivery]:
    """The deliveries of one of ``user_id``'s jobs, oldest first; anybody else's job is not found."""
    await get_owned_job(session, user_id, job_id)
    rows = await session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
    )
    return rows.all()


async def delete_settled(session: AsyncSession, settled_before: datetime, *, status: str, limit: int) -> int:
    """Delete up to ``limit`` deliveries of ``status`` (``delivered`` or ``failed``) whose last
    attempt was before ``settled_before`` (retention, one batch). Pending ones are never touched.

    A settled delivery's ``next_attempt_at`` is when its last attempt was recorded (the deliverer
    writes it then), which the (status, next_attempt_at) index serves.
    """
    if status == "pending":
        raise ValueError("pending deliveries are still being sent")
    settled = (WebhookDelivery.status == status, WebhookDelivery.next_attempt_at < settled_before)
    return await delete_some(session, WebhookDelivery.id, *settled, limit=limit)
