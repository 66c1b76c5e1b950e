"""A cheap file-input predictor: jobs with an uploaded input and a stored artifact, no model weights."""

from __future__ import annotations

from typing import Any, ClassVar

from mlservice.predictors.base import (
    Artifact,
    InputLimits,
    InvalidInput,
    PredictInput,
    Predictor,
    PredictOutput,
)


class FileEcho(Predictor):
    """Returns the upload's size and stores a copy of it as the artifact ``copy``."""

    slug: ClassVar[str] = "test-file-echo"
    title: ClassVar[str] = "File echo (tests)"
    task: ClassVar[str] = "echo"
    description: ClassVar[str] = "Returns the size of the uploaded file and a copy of it."
    input_kind = "file"
    default_price: ClassVar[int] = 2

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        assert data is not None
        if not data:
            raise InvalidInput("The file is empty.", code="empty_file")
        return {}

    def load(self) -> None:
        return None

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        return [
            PredictOutput(
                {"bytes": len(item.data or b"")},
                artifacts={"copy": Artifact(item.data or b"", "application/octet-stream", "copy.bin")},
            )
            for item in inputs
        ]
