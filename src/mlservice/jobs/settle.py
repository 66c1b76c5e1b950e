"""Settling an attempt: its outcome, its side effects and its charge in one unit of work, and the
sweep of attempts whose worker vanished."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import after_rollback
from mlservice.jobs import repository
from mlservice.jobs.attempts import Outcome
from mlservice.jobs.dispatch import JobPublisher
from mlservice.jobs.events import announce_finished
from mlservice.predictors.base import PredictOutput
from mlservice.storage.base import Storage
from mlservice.wallet import service as wallet
from mlservice.webhooks import outbox as webhooks

log = logging.getLogger(__name__)

SuccessHook = Callable[[AsyncSession, PredictOutput], Awaitable[None]]

ARTIFACT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def artifact_key(job_id: uuid.UUID, name: str) -> str:
    return f"jobs/{job_id}/artifacts/{name}"


async def record_outcome(
    session: AsyncSession,
    job_id: uuid.UUID,
    attempt: int,
    outcome: Outcome,
    *,
    storage: Storage | None = None,
    on_success: SuccessHook | None = None,
) -> bool:
    """Write the outcome if this attempt still owns the job; False when it lost its claim.

    On success the predictor's hook runs and the artifacts are stored in the same unit of work,
    so a result, its side effects and its charge commit together or not at all.
    """
    prediction = outcome.prediction if outcome.error_code is None else None
    artifacts: dict[str, dict[str, Any]] = {}
    if prediction is not None:
        for name, artifact in prediction.artifacts.items():
            if storage is None or not ARTIFACT_NAME.match(name):
                raise ValueError(f"cannot store artifact {name!r}")
            artifacts[name] = {
                "media_type": artifact.media_type,
                "filename": artifact.filename,
                "bytes": len(artifact.data),
            }
    if prediction is not None:
        owned = await repository.succeed(
            session,
            job_id,
            attempt,
            output=prediction.result,
            artifacts=artifacts,
            processing_ms=outcome.processing_ms,
            logs=outcome.logs,
        )
    else:
        owned = await repository.fail(
            session,
            job_id,
            attempt,
            error_code=outcome.error_code or "prediction_failed",
            error_message=outcome.error_message,
            processing_ms=outcome.processing_ms,
            logs=outcome.logs,
        )
    if owned is None:
        log.warning("job %s attempt %s lost its claim; result dropped", job_id, attempt)
        return False
    await announce_finished(session, job_id)
    if owned.webhook_url and webhooks.announces(owned.webhook_events, "completed"):
        webhooks.enqueue(session, job_id, "completed")
    if prediction is None:
        await wallet.release_hold(session, job_id)
        return True
    if on_success is not None:
        # The hook may change the result (e.g. take out what only it should see): written again.
        await on_success(session, prediction)
        await repository.rewrite_output(session, job_id, prediction.result)
    for name, artifact in prediction.artifacts.items():
        assert storage is not None  # checked with the names above
        key = artifact_key(job_id, name)
        await storage.put(key, artifact.data, session=session)
        after_rollback(session, partial(storage.delete, key))
    await wallet.capture_hold(session, job_id)
    return True


async def sweep(session: AsyncSession, publisher: JobPublisher, *, max_attempts: int) -> int:
    """Requeue running jobs whose lease expired; fail them (releasing the hold) past the attempt limit."""
    expired = await repository.expired_leases(session)
    for job_id, model_slug, attempts in expired:
        if attempts >= max_attempts:
            await record_outcome(
                session,
                job_id,
                attempts,
                Outcome(
                    error_code="attempts_exhausted",
                    error_message=f"The job did not finish in {attempts} attempts.",
                ),
            )
            continue
        if await repository.requeue(session, job_id, attempts, unpublished=True):
            publisher.publish_after_commit(session, model_slug, job_id, attempts)
    return len(expired)
