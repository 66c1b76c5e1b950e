"""Job hooks: what a feature does in a job's own transactions around a model run, for the models
that need more than their input (the face gallery, say).

Predictors never touch the database; a feature that owns data a model reads or writes gives the
executor hooks for that model's slug (the composition root collects them). ``load_context`` runs
in the worker's read transaction before the batch runs, and its value reaches the model as
``PredictInput.context``; ``on_success`` runs in the transaction that records the result and
captures the hold, so the side effect commits with the charge or not at all.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.jobs.attempts import Claimed
from mlservice.predictors.base import PredictOutput


class JobHooks(Protocol):
    async def load_context(self, session: AsyncSession, job: Claimed) -> Any:
        """Data of the job's owner the model needs; None when it needs nothing."""

    async def on_success(self, session: AsyncSession, job: Claimed, output: PredictOutput) -> None:
        """Persist the run's side effects; may add to ``output.result`` (written after it)."""


class NoHooks:
    """For models that need nothing but their input."""

    async def load_context(self, session: AsyncSession, job: Claimed) -> Any:
        return None

    async def on_success(self, session: AsyncSession, job: Claimed, output: PredictOutput) -> None:
        return None
