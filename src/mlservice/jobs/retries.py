"""When a failed attempt is tried again: exponential backoff with jitter, capped, and the errors that
are never retried because no later attempt could succeed (dramatiq's and Celery's habits)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mlservice.predictors.base import InvalidInput, PermanentError

# Raised by a model for this input, whatever attempt runs it: the job fails at once.
NEVER_RETRIED: tuple[type[BaseException], ...] = (InvalidInput, PermanentError)


def is_retryable(exc: BaseException) -> bool:
    return not isinstance(exc, NEVER_RETRIED)


@dataclass(frozen=True)
class Backoff:
    """The delay before attempt ``n + 1`` after attempt ``n`` failed: ``base * 2**(n-1)``, capped at
    ``cap``, drawn uniformly from its upper half ("equal jitter") so that a batch that failed
    together does not come back together."""

    base_s: float = 1.0
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        if self.base_s <= 0:
            return 0.0
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(attempt - 1, 0))
        jitter = float((rng or random).uniform(0, ceiling / 2))
        return ceiling / 2 + jitter
