"""A user's enrolled faces as one matrix, and matching faces against it. Pure numpy: the rows are
read from the database by the faces feature (:mod:`mlservice.faces.service`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mlservice.predictors.faces.detection import Face

EMBEDDING_SIZE: Final = 128
# The distance below which dlib's model considers two faces the same person.
MATCH_THRESHOLD: Final = 0.6
MIN_THRESHOLD: Final = 0.3
MAX_THRESHOLD: Final = 0.8

UNKNOWN_LABEL: Final = "unknown"


@dataclass(frozen=True)
class Gallery:
    """The owner's enrolled faces as one matrix, ready for distance computations."""

    ids: list[uuid.UUID]
    labels: list[str]
    embeddings: npt.NDArray[np.float32]  # shape (n, 128)

    def __len__(self) -> int:
        return len(self.ids)


def encode_embedding(vector: npt.ArrayLike) -> bytes:
    """128 little-endian float32 values, as the gallery stores them."""
    array = np.asarray(vector, dtype="<f4")
    if array.shape != (EMBEDDING_SIZE,):
        raise ValueError(f"a face embedding has {EMBEDDING_SIZE} values, got shape {array.shape}")
    return array.tobytes()


def decode_embedding(raw: bytes) -> npt.NDArray[np.float32]:
    if len(raw) != 4 * EMBEDDING_SIZE:
        raise ValueError(f"a face embedding has {EMBEDDING_SIZE} float32 values, got {len(raw)} bytes")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


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
