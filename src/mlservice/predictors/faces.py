"""Face enrollment and identification with dlib: HOG detection, 5-point landmarks, 128-d embeddings.

Both predictors run the same pipeline, in :class:`FaceModels`:

* **Detection**: dlib's frontal-face HOG detector (``get_frontal_face_detector``). It needs no weight
  file and scans an 80x80 window over an image pyramid, so on its own it finds faces from about 80
  pixels up. The scan is done on a *detection view* of the image (:func:`detection_settings`):

  - images longer than :data:`DETECT_MAX_SIDE` are scanned on a copy downscaled to that side. The
    scan costs time in proportion to the pixels (a full 3072x3072 scan takes ~1.6 s, the 800x800
    view ~0.1 s), so this bounds the submit-time check of an enrollment, which runs in the API
    process, as well as the worker's time. Faces smaller than about 1/10 of the long side of a
    large photo are not looked for; an enrollment photo has its face well above that.
  - images no longer than :data:`UPSAMPLE_MAX_SIDE` are scanned with one pyramid upsampling
    (``upsample_num_times=1``), which halves the smallest findable face to about 40 pixels. The
    upsampled scan of such an image costs no more than a plain scan of an 800-pixel one. A 307-pixel
    thumbnail of the scikit-image astronaut (face about 52 pixels) is only found this way.
  - everything in between is scanned as it is (``upsample_num_times=0``). Upsampling these too would
    quadruple the scan for faces that, in a photo of this size, are rarely its subject.

  Detections must score at least :data:`DETECTION_MIN_SCORE` (dlib's default is 0). dlib's 0 is
  the SVM's decision boundary, tuned for recall; for a paid biometric answer a phantom face is worse
  than a missed weak one: it makes a good enrollment photo fail as ``multiple_faces`` and adds an
  "unknown" face to identifications. On the scikit-image astronaut the glove is detected as a face
  with scores of -0.3 to 0.25 (depending on scale, mirroring and JPEG quality) while the real faces
  of the astronaut and of Grace Hopper score 0.87-1.7 in all 24 variants tried. Detections that
  score this low are also the side views and blurred faces whose 5-point alignment and embedding
  are unreliable, so dropping them costs identification little.

  Boxes are scaled back to the decoded image for the landmarks and the embedding, so those always
  see the full-resolution pixels, and reported in the coordinates of the upload as displayed.
* **Landmarks**: ``shape_predictor_5_face_landmarks.dat`` (eye corners and nose), which is what the
  recognition model's face alignment was trained with.
* **Embedding**: ``dlib_face_recognition_resnet_model_v1.dat`` via ``compute_face_descriptor`` with
  ``num_jitters=1`` (no augmentation; more jitters cost that many extra network passes). All faces of
  a batch go through the network in one call, which is cheaper than one call per face.
* **Matching**: two faces are the same person when the Euclidean distance between their embeddings
  is below 0.6, the threshold of dlib's own evaluation of the model (99.38% on LFW).

The weights come from the ``face-recognition-models`` package. It is located with
:func:`importlib.util.find_spec` and never imported: its ``__init__`` needs ``pkg_resources``, which
current setuptools no longer provides.

Enrollment result and ``on_success``: ``FaceEnroll.predict_batch`` puts the embedding into the
result under :data:`EMBEDDING_KEY` (base64 of 128 little-endian float32 values), because a
``PredictOutput`` has no other place for data that is not an artifact. ``FaceEnroll.on_success``
*pops* that key, stores the embedding in the owner's gallery and adds ``face_id``; the worker must
therefore call ``on_success`` on the very ``PredictOutput`` (the same ``result`` dict) it records
afterwards, so the raw embedding never reaches the stored, user-visible result.
"""

from __future__ import annotations

import base64
import importlib.util
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

import dlib
import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from mlservice.faces import service as face_service
from mlservice.faces.service import EMBEDDING_SIZE, Gallery
from mlservice.predictors.base import (
    InputKind,
    InputLimits,
    InvalidInput,
    PredictInput,
    Predictor,
    PredictOutput,
)
from mlservice.predictors.images import WORKER_BACKSTOP_LIMITS, DecodedImage, inspect_image, read_image

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

MODELS_PACKAGE: Final = "face_recognition_models"
SHAPE_PREDICTOR_FILENAME: Final = "shape_predictor_5_face_landmarks.dat"
RECOGNITION_MODEL_FILENAME: Final = "dlib_face_recognition_resnet_model_v1.dat"

# Scans of images longer than this run on a copy downscaled to it (see the module docstring).
DETECT_MAX_SIDE: Final = 800
# Images no longer than this are scanned with one pyramid upsampling, to find faces down to ~40 px.
UPSAMPLE_MAX_SIDE: Final = 400

# Minimum HOG detection score (``adjust_threshold``) for a detection to count as a face.
DETECTION_MIN_SCORE: Final = 0.5

NUM_JITTERS: Final = 1
# The distance below which dlib's model considers two faces the same person.
MATCH_THRESHOLD: Final = 0.6
MIN_THRESHOLD: Final = 0.3
MAX_THRESHOLD: Final = 0.8

# Where FaceEnroll's result carries the embedding to on_success, which removes it (module docstring).
EMBEDDING_KEY: Final = "_embedding"
UNKNOWN_LABEL: Final = "unknown"


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


# -- model files and detection geometry (no model needed) -------------------------------------------


def model_files() -> tuple[Path, Path]:
    """Paths of the landmark and recognition weights inside the face-recognition-models package."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The face models are not installed: pip install face-recognition-models==0.3.0")
    models_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    return models_dir / SHAPE_PREDICTOR_FILENAME, models_dir / RECOGNITION_MODEL_FILENAME


def detection_settings(width: int, height: int) -> tuple[float, int]:
    """``(scale, upsample_num_times)`` of the HOG scan of a ``width`` x ``height`` image."""
    long_side = max(width, height)
    if long_side > DETECT_MAX_SIDE:
        return DETECT_MAX_SIDE / long_side, 0
    if long_side <= UPSAMPLE_MAX_SIDE:
        return 1.0, 1
    return 1.0, 0


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    def as_dict(self) -> dict[str, int]:
        return {"left": self.left, "top": self.top, "right": self.right, "bottom": self.bottom}


def detect_faces(detector: Any, image: Image.Image, pixels: npt.NDArray[np.uint8] | None = None) -> list[Box]:
    """Faces found by ``detector`` (a dlib HOG detector), in the pixel coordinates of ``image``.

    ``pixels``, if given, is ``np.asarray(image)`` already made by the caller; it saves a copy of
    the whole image when no downscaled view is needed.
    """
    scale, upsample = detection_settings(*image.size)
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        view = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
    else:
        view = np.asarray(image) if pixels is None else pixels
    rectangles, _scores, _sub_detectors = detector.run(view, upsample, DETECTION_MIN_SCORE)
    # Per-axis factors undo the rounding of the view's size exactly.
    sx, sy = image.width / view.shape[1], image.height / view.shape[0]
    boxes = [
        Box(round(r.left() * sx), round(r.top() * sy), round(r.right() * sx), round(r.bottom() * sy))
        for r in rectangles
    ]
    # dlib orders by detection score; reading order is easier to relate to the picture and stable.
    return sorted(boxes, key=lambda box: (box.left, box.top))


class _SubmitDetector:
    """The HOG detector ``FaceEnroll.prepare_input`` uses in the API process.

    prepare_input is a classmethod with no ``load``, and building the detector takes ~0.4 s (it
    deserialises its model), too slow to pay per upload. It is therefore built on first use, never at
    import, and shared. dlib documents object detectors as unsafe for concurrent use (a scan keeps
    its feature pyramid in the detector), so scans are serialised by a lock. Two threads with a
    detector each scanned no faster than one, so one detector per thread would only add 0.4 s and
    memory per API thread.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _detector: ClassVar[Any] = None

    @classmethod
    def detect(cls, image: Image.Image) -> list[Box]:
        with cls._lock:
            if cls._detector is None:
                cls._detector = dlib.get_frontal_face_detector()
            return detect_faces(cls._detector, image)


# -- the loaded models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Face:
    box: Box  # in the coordinates of the upload as displayed
    embedding: npt.NDArray[np.float32]  # (128,)


@dataclass(frozen=True)
class _Scan:
    decoded: DecodedImage
    pixels: npt.NDArray[np.uint8]  # the decoded image as an HxWx3 array
    boxes: list[Box]  # in the coordinates of ``pixels``


class FaceModels:
    """The dlib objects both predictors use, loaded together by :meth:`load`.

    dlib's detector and its DNN keep scratch state and are not safe to call from two threads at
    once; the lock makes an instance safe to share, at no cost when, as in the worker pool, calls
    are already one at a time.
    """

    def __init__(self, detector: Any, shape_predictor: Any, recognizer: Any) -> None:
        self.detector = detector
        self.shape_predictor = shape_predictor
        self.recognizer = recognizer
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> FaceModels:
        shape_path, recognition_path = model_files()
        models = cls(
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(shape_path)),
            dlib.face_recognition_model_v1(str(recognition_path)),
        )
        models.warm_up()
        return models

    def warm_up(self) -> None:
        # The first network pass allocates its buffers; paying that here keeps it out of the first
        # customer's latency.
        with self._lock:
            self.detector(np.zeros((64, 64, 3), dtype=np.uint8), 0)
            self.recognizer.compute_face_descriptor(np.zeros((150, 150, 3), dtype=np.uint8), NUM_JITTERS)

    def scan(self, decoded: DecodedImage) -> _Scan:
        """Detect the faces of one decoded image."""
        pixels = np.asarray(decoded.image)
        with self._lock:
            boxes = detect_faces(self.detector, decoded.image, pixels)
        return _Scan(decoded, pixels, boxes)

    def embed(self, scans: list[_Scan]) -> list[list[Face]]:
        """Landmarks and embeddings of every face found by :meth:`scan`, one list per image."""
        with_faces = [scan for scan in scans if scan.boxes]
        vectors: list[Any] = []
        if with_faces:
            with self._lock:
                landmarks = [
                    dlib.full_object_detections(
                        [
                            self.shape_predictor(
                                scan.pixels, dlib.rectangle(b.left, b.top, b.right, b.bottom)
                            )
                            for b in scan.boxes
                        ]
                    )
                    for scan in with_faces
                ]
                # One call for the whole batch: dlib runs the aligned chips through the network in
                # mini-batches, cheaper than a pass per face.
                vectors = list(
                    self.recognizer.compute_face_descriptor(
                        [scan.pixels for scan in with_faces], landmarks, NUM_JITTERS
                    )
                )

        per_image = iter(vectors)
        results: list[list[Face]] = []
        for scan in scans:
            if not scan.boxes:
                results.append([])
                continue
            embeddings = np.asarray([list(v) for v in next(per_image)], dtype=np.float32)
            results.append(
                [
                    Face(_display_box(box, scan.decoded), embedding)
                    for box, embedding in zip(scan.boxes, embeddings, strict=True)
                ]
            )
        return results


def _display_box(box: Box, decoded: DecodedImage) -> Box:
    """``box`` from decoded pixels (maybe a reduced-scale JPEG decode) to the upload as displayed,
    clipped to the image (dlib's boxes may overhang the border for faces cut off by it)."""
    sx, sy = decoded.width / decoded.image.width, decoded.height / decoded.image.height
    return Box(
        min(max(round(box.left * sx), 0), decoded.width),
        min(max(round(box.top * sy), 0), decoded.height),
        min(max(round(box.right * sx), 0), decoded.width),
        min(max(round(box.bottom * sy), 0), decoded.height),
    )


# -- predictors -------------------------------------------------------------------------------------


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
        try:
            return all(path.is_file() for path in model_files())
        except RuntimeError:
            return False

    def load(self) -> None:
        if not self.is_prepared():
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
        scans = [self._scan(item) for item in inputs]
        # Checked again because the worker may run another build than the API; raising before the
        # network runs keeps a bad item cheap (the executor then reruns its batch-mates alone).
        for scan in scans:
            _check_single_face(len(scan.boxes))

        outputs = []
        for item, faces in zip(inputs, models.embed(scans), strict=True):
            (face,) = faces
            outputs.append(
                PredictOutput(
                    result={
                        "label": str(item.params["label"]),
                        "box": face.box.as_dict(),
                        "embedding_stored": True,
                        EMBEDDING_KEY: encode_private_embedding(face.embedding),
                    }
                )
            )
        return outputs

    @classmethod
    async def on_success(
        cls,
        session: AsyncSession,
        user_id: uuid.UUID,
        job_id: uuid.UUID,
        params: dict[str, Any],
        output: PredictOutput,
    ) -> None:
        # Popped first, so the raw embedding is gone from the result that is recorded next.
        raw = output.result.pop(EMBEDDING_KEY, None)
        if not isinstance(raw, str):
            raise RuntimeError("The enrollment output has no embedding to store.")
        entry = await face_service.add_face(
            session, user_id, str(params["label"]), decode_private_embedding(raw), job_id
        )
        output.result["face_id"] = str(entry.id)


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

    @classmethod
    async def load_context(cls, session: AsyncSession, user_id: uuid.UUID, params: dict[str, Any]) -> Gallery:
        # Only the job owner's gallery: nobody is ever matched against another user's faces.
        return await face_service.load_gallery(session, user_id)

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        if not inputs:
            return []
        models = self._loaded()
        galleries = [_gallery(item) for item in inputs]
        per_image = models.embed([self._scan(item) for item in inputs])

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
        raise RuntimeError("FaceIdentify needs the owner's gallery (load_context) in PredictInput.context.")
    if gallery.embeddings.shape != (len(gallery), EMBEDDING_SIZE):
        raise RuntimeError(f"The gallery's embeddings have shape {gallery.embeddings.shape}.")
    return gallery


def match_faces(faces: list[Face], gallery: Gallery, threshold: float) -> list[dict[str, Any]]:
    """Each face with its nearest gallery entry, named when closer than ``threshold``."""
    if not faces:
        return []
    if not len(gallery):
        return [
            {"box": f.box.as_dict(), "label": UNKNOWN_LABEL, "distance": None, "face_id": None} for f in faces
        ]

    # All face-to-gallery distances in one product, |a-b|^2 = |a|^2 + |b|^2 - 2ab, in float64 so
    # that cancellation cannot change which entry is nearest.
    queries = np.stack([f.embedding for f in faces]).astype(np.float64)
    references = gallery.embeddings.astype(np.float64)
    squared = (
        np.einsum("ij,ij->i", queries, queries)[:, None]
        + np.einsum("ij,ij->i", references, references)[None, :]
        - 2.0 * queries @ references.T
    )
    distances = np.sqrt(np.maximum(squared, 0.0))
    # argmin takes the first of equal distances: the earliest enrollment, as the gallery is ordered.
    nearest = distances.argmin(axis=1)

    matches = []
    for query, face, best in zip(queries, faces, nearest, strict=True):
        # The reported distance (and the threshold test) is recomputed directly from the difference:
        # the product form is off by up to ~1e-8, enough to flip a comparison at the threshold or
        # to report 0.0001 for a face compared with itself.
        distance = float(np.linalg.norm(query - references[best]))
        known = distance < threshold
        matches.append(
            {
                "box": face.box.as_dict(),
                "label": gallery.labels[best] if known else UNKNOWN_LABEL,
                "distance": round(distance, 4),
                "face_id": str(gallery.ids[best]) if known else None,
            }
        )
    return matches


def encode_private_embedding(embedding: npt.ArrayLike) -> str:
    """The embedding as FaceEnroll's result carries it to on_success: exact and compact."""
    return base64.b64encode(face_service.encode_embedding(embedding)).decode("ascii")


def decode_private_embedding(raw: str) -> npt.NDArray[np.float32]:
    payload = base64.b64decode(raw, validate=True)
    if len(payload) != 4 * EMBEDDING_SIZE:
        raise ValueError(f"a face embedding has {EMBEDDING_SIZE} float32 values, got {len(payload)} bytes")
    return face_service.decode_embedding(payload)
