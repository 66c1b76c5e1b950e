"""The one submit sequence every entry point uses (`POST /api/jobs`, `/v1`, the Telegram bot)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlservice.catalog.tables import CatalogModel
from mlservice.history.recording import RequestRecord, add_answer
from mlservice.idempotency.service import Outcome
from mlservice.jobs import service
from mlservice.jobs.validation import Submission, validate
from mlservice.predictors.base import InputLimits, Predictor
from mlservice.webhooks.outbox import DEFAULT_FLAVOUR
from mlservice.webhooks.service import Subscription

if TYPE_CHECKING:
    import uuid

    from mlservice.components import Components


async def submit_recorded(
    components: Components,
    *,
    user_id: uuid.UUID,
    submission: Submission,
    model: CatalogModel,
    predictor: type[Predictor],
    record: RequestRecord,
    idempotency_key: str | None = None,
    webhook: Subscription | None = None,
    webhook_flavour: str = DEFAULT_FLAVOUR,
) -> Outcome:
    """Check and decode the input (no connection held meanwhile), then hold the price, queue the job
    and record the request, all in one write transaction. ``model`` was read by the caller."""
    settings = components.settings
    limits = InputLimits(settings.max_upload_bytes, settings.max_image_pixels)
    validated = await validate(model, predictor, submission, limits)
    record.describe_input(validated.meta)
    async with components.db.session(write=True) as session:
        outcome = await service.submit(
            session,
            user_id=user_id,
            submission=submission,
            idempotency_key=idempotency_key,
            predictors=components.predictors,
            limits=limits,
            storage=components.storage,
            publisher=components.publisher,
            validated=validated,
            webhook_url=webhook.url if webhook else None,
            webhook_events=webhook.events if webhook else None,
            webhook_flavour=webhook_flavour,
        )
        # In the job's transaction; a refused request is recorded by the caller's `record`.
        await add_answer(session, record, outcome)
    return outcome
