"""Retries back off exponentially with jitter, capped; errors no attempt could fix are not retried."""

from __future__ import annotations

import random

import pytest

from mlservice.jobs.retries import Backoff, is_retryable
from mlservice.predictors.base import InvalidInput, PermanentError


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(base_s=1.0, cap_s=10.0)
    rng = random.Random(7)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (12, 10.0)):
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        # Equal jitter: from half the ceiling up to it, spread over that range.
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4


def test_a_zero_base_retries_at_once() -> None:
    assert Backoff(base_s=0, cap_s=30).delay(3) == 0.0


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RuntimeError("the model crashed"), True),
        (MemoryError(), True),
        (InvalidInput("not an image", code="invalid_image"), False),
        (PermanentError("returned 2 outputs for 3 inputs"), False),
    ],
)
def test_which_errors_are_retried(error: BaseException, retried: bool) -> None:
    assert is_retryable(error) is retried
