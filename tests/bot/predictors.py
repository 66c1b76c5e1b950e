"""Cheap predictors with the bot's input kinds: a photo labeller, a face enroller, a file scanner."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mlservice.predictors.base import Artifact, InputLimits, PredictInput, Predictor, PredictOutput


class _Cheap(Predictor):
    max_batch_size: ClassVar[int] = 1
    max_wait_ms: ClassVar[int] = 0

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        return {}

    def load(self) -> None:
        pass


class PhotoLabels(_Cheap):
    slug: ClassVar[str] = "test-photo-labels"
    title: ClassVar[str] = "Photo labels (tests)"
    task: ClassVar[str] = "image-classification"
    description: ClassVar[str] = "Labels every photo a tabby, and cuts it out unchanged."
    input_kind = "image"
    default_price: ClassVar[int] = 2

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        return [
            PredictOutput(
                {
                    "predictions": [
                        {"label": "tabby", "probability": 0.75},
                        {"label": "lynx", "probability": 0.2},
                    ]
                },
                artifacts={"cutout": Artifact(i.data or b"", "image/png", "cutout.png")},
            )
            for i in inputs
        ]


class LabelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=100)


class FakeFaceEnroll(_Cheap):
    slug: ClassVar[str] = "face-enroll"
    title: ClassVar[str] = "Face enroll (tests)"
    task: ClassVar[str] = "face-enroll"
    description: ClassVar[str] = "Remembers nothing; answers with the label."
    input_kind = "image"
    params_model: ClassVar[type[BaseModel]] = LabelParams
    default_price: ClassVar[int] = 1

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        return [PredictOutput({"label": i.params["label"]}) for i in inputs]


class FileVerdict(_Cheap):
    slug: ClassVar[str] = "test-file-verdict"
    title: ClassVar[str] = "File verdict (tests)"
    task: ClassVar[str] = "malware-detection"
    description: ClassVar[str] = "Malicious when the file starts with MZ."
    input_kind = "file"
    default_price: ClassVar[int] = 4

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        return [
            PredictOutput(
                {"verdict": "malicious" if (i.data or b"").startswith(b"MZ") else "benign", "score": 0.5}
            )
            for i in inputs
        ]
