"""The retention sweep: every batch of every kind is a unit of work of its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.apikeys import service as apikeys
from mlservice.chats import messages as chat_messages
from mlservice.chats import service as chats
from mlservice.db import Database
from mlservice.errors import ServiceUnavailable
from mlservice.history import service as history
from mlservice.idempotency import service as idempotency
from mlservice.jobs import repository as jobs
from mlservice.jobs.settle import artifact_key
from mlservice.retention.policy import (
    API_KEYS,
    BROWSER_SESSIONS,
    CHAT_MESSAGES,
    IDEMPOTENCY_KEYS,
    JOB_FILES,
    KINDS,
    LINK_CODES,
    REQUEST_HISTORY,
    UPLOADS,
    WEBHOOK_DELIVERIES,
    RetentionPolicy,
)
from mlservice.storage.base import Storage
from mlservice.uploads import repository as uploads
from mlservice.users import service as users
from mlservice.webhooks import service as webhooks

log = logging.getLogger(__name__)

# One batch, in the caller's unit of work: the rows it removed (or marked), and the storage keys
# of the files those rows named, to delete with them.
Batch = Callable[[AsyncSession, int], Awaitable[tuple[int, list[str]]]]
# Told of what each committed batch removed: (kind, how many).
Counted = Callable[[str, int], None]
RowRemoval = Callable[..., Awaitable[int]]


def _rows(remove: RowRemoval, before: datetime, **options: str) -> Batch:
    async def batch(session: AsyncSession, limit: int) -> tuple[int, list[str]]:
        return await remove(session, before, limit=limit, **options), []

    return batch


async def _uploads(session: AsyncSession, limit: int, *, now: datetime) -> tuple[int, list[str]]:
    removed = await uploads.delete_expired(session, now, limit=limit)
    return len(removed), [uploads.upload_key(file_id) for file_id in removed]


async def _job_files(
    session: AsyncSession, limit: int, *, finished_before: datetime, now: datetime
) -> tuple[int, list[str]]:
    expired = await jobs.expire_files(session, finished_before, now, limit=limit)
    keys = [
        key
        for job_id, input_file, artifacts in expired
        for key in ([input_file] if input_file else []) + [artifact_key(job_id, name) for name in artifacts]
    ]
    return len(expired), keys


def batches(policy: RetentionPolicy, now: datetime) -> list[tuple[str, Batch]]:
    """What to remove at ``now``, kind by kind (a kind kept forever has none)."""
    found: list[tuple[str, Batch]] = [
        (UPLOADS, partial(_uploads, now=now)),
        (BROWSER_SESSIONS, _rows(users.delete_finished_sessions, now)),
        (LINK_CODES, _rows(chats.delete_expired_codes, now)),
    ]
    if policy.idempotency_keys is not None:
        found.append((IDEMPOTENCY_KEYS, _rows(idempotency.delete_older, now - policy.idempotency_keys)))
    if policy.job_files is not None:
        found.append((JOB_FILES, partial(_job_files, finished_before=now - policy.job_files, now=now)))
    for status, kept in (("delivered", policy.delivered_webhooks), ("failed", policy.failed_webhooks)):
        if kept is not None:
            found.append((WEBHOOK_DELIVERIES, _rows(webhooks.delete_settled, now - kept, status=status)))
    if policy.delivered_webhooks is not None:
        found.append((CHAT_MESSAGES, _rows(chat_messages.delete_settled, now - policy.delivered_webhooks)))
    if policy.revoked_api_keys is not None:
        found.append((API_KEYS, _rows(apikeys.delete_revoked, now - policy.revoked_api_keys)))
    if policy.request_history is not None:
        found.append((REQUEST_HISTORY, _rows(history.delete_oldest, now - policy.request_history)))
    return found


async def sweep(
    db: Database,
    storage: Storage,
    policy: RetentionPolicy,
    *,
    now: datetime,
    counted: Counted | None = None,
    stopping: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Remove everything ``policy`` says has expired at ``now``, batch by batch until none is
    left; what was removed, by kind (rows; files for ``job_files``).

    ``counted`` hears of each batch once it committed (a sweep cut short still counts what it
    did); ``stopping`` is asked between batches (a process shutting down stops after the batch in
    hand, whose files are then deleted). A kind that fails is logged and the others still run; a
    database outage ends the sweep.
    """
    removed = dict.fromkeys(KINDS, 0)
    for kind, batch in batches(policy, now):
        try:
            while True:
                rows, files = await _run(db, storage, batch, policy.batch_size)
                amount = len(files) if kind == JOB_FILES else rows
                removed[kind] += amount
                if counted is not None and amount:
                    counted(kind, amount)
                if rows < policy.batch_size or (stopping is not None and stopping()):
                    break
                await asyncio.sleep(0)  # what else this process does gets a turn between batches
        except ServiceUnavailable:
            raise
        except Exception:
            log.exception("retention sweep of %s failed", kind)
        if stopping is not None and stopping():
            break
    return removed


async def _run(db: Database, storage: Storage, batch: Batch, limit: int) -> tuple[int, list[str]]:
    async with db.session(write=True) as session:
        rows, keys = await batch(session, limit)
        if keys and storage.joins_transactions:
            # Files in the database go in the same commit as the rows that named them.
            await storage.delete_many(keys, session=session)
    if keys and not storage.joins_transactions:
        # Files on disk go only once the rows no longer name them (or say they expired): a crash
        # in between leaves files no row names, never a row naming a missing file.
        await storage.delete_many(keys)
    return rows, keys
