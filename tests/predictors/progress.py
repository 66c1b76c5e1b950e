"""A JobControl whose progress reports are recorded, for the predictors' progress and cancel tests."""

from __future__ import annotations

from mlservice.predictors.base import JobControl


class RecordingControl(JobControl):
    """Records each progress report; ``cancel_after`` reports, the job is canceled (as the
    worker would, from another thread, while the predictor runs on)."""

    def __init__(self, cancel_after: int | None = None) -> None:
        super().__init__(self._record)
        self.reports: list[tuple[float, str]] = []
        self.cancel_after = cancel_after

    def _record(self, fraction: float, message: str) -> None:
        self.reports.append((fraction, message))
        if self.cancel_after is not None and len(self.reports) >= self.cancel_after:
            self.cancel()

    @property
    def fractions(self) -> list[float]:
        return [fraction for fraction, _ in self.reports]

    def assert_monotonic_to_the_end(self) -> None:
        fractions = self.fractions
        assert fractions, "no progress reported"
        assert all(0.0 <= f <= 1.0 for f in fractions), fractions
        assert fractions == sorted(fractions), fractions
        assert fractions[-1] >= 0.99, fractions
