"""Face enrollment and identification (dlib): detection policy, submit-time checks, embeddings,
matching against a gallery, and the hooks that read and write the owner's gallery."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import io
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image
from skimage import data as samples
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from mlservice.faces.hooks import GalleryReader, GalleryWriter
from mlservice.faces.tables import FaceEntry
from mlservice.jobs.attempts import Claimed
from mlservice.predictors.base import InputLimits, InvalidInput, PredictInput, PredictOutput
from mlservice.predictors.faces import (
    DETECT_MAX_SIDE,
    EMBEDDING_KEY,
    MATCH_THRESHOLD,
    UPSAMPLE_MAX_SIDE,
    Box,
    Face,
    FaceEnroll,
    FaceIdentify,
    Gallery,
    detection_settings,
    match_faces,
    model_files,
)
from mlservice.predictors.faces.gallery import decode_embedding, encode_embedding
from mlservice.tables import metadata

LIMITS = InputLimits(max_upload_bytes=20 * 1024 * 1024, max_image_pixels=50_000_000)

# Where dlib's HOG detector puts the astronaut's face in the 512x512 original.
ASTRONAUT_BOX = Box(179, 83, 266, 170)


def jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def sample(name: str) -> np.ndarray:
    """A scikit-image sample picture (bundled with the package, no download)."""
    pixels: np.ndarray = np.asarray(getattr(samples, name)())
    return pixels


def astronaut_pixels() -> np.ndarray:
    return sample("astronaut")


def grace_hopper_jpeg() -> bytes:
    """Matplotlib's sample photo of Grace Hopper (bundled, no download), as the JPEG it is."""
    return Path(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))).read_bytes()


def grace_hopper_pixels() -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(grace_hopper_jpeg())).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return jpeg(astronaut_pixels())


@pytest.fixture(scope="module")
def astronaut_transformed() -> bytes:
    """The astronaut at 0.6x (307 px, face ~52 px) and mirrored: another photo of the same person."""
    small = Image.fromarray(astronaut_pixels()).resize((307, 307), Image.Resampling.BILINEAR)
    return jpeg(np.ascontiguousarray(np.asarray(small)[:, ::-1]))


@pytest.fixture(scope="module")
def grace_hopper() -> bytes:
    return grace_hopper_jpeg()


@pytest.fixture(scope="module")
def chelsea() -> bytes:
    return jpeg(sample("chelsea"))


@pytest.fixture(scope="module")
def two_faces() -> bytes:
    """The astronaut (left) and Grace Hopper (right) side by side, 741x400, both faces ~90+ px."""
    left = astronaut_pixels()[0:400, 50:450]
    right = np.asarray(Image.fromarray(grace_hopper_pixels()).resize((341, 400), Image.Resampling.BILINEAR))
    return jpeg(np.ascontiguousarray(np.concatenate([left, right], axis=1)))


@pytest.fixture(scope="module")
def enroll(tmp_path_factory: pytest.TempPathFactory) -> FaceEnroll:
    predictor = FaceEnroll(tmp_path_factory.mktemp("face-cache"), limits=LIMITS)
    predictor.load()
    return predictor


@pytest.fixture(scope="module")
def identify(tmp_path_factory: pytest.TempPathFactory) -> FaceIdentify:
    predictor = FaceIdentify(tmp_path_factory.mktemp("face-cache"), limits=LIMITS)
    predictor.load()
    return predictor


def enrolled_output(predictor: FaceEnroll, payload: bytes, label: str) -> PredictOutput:
    return predictor.predict_batch([PredictInput(data=payload, text=None, params={"label": label})])[0]


def enrolled(predictor: FaceEnroll, payload: bytes, label: str) -> dict[str, Any]:
    return enrolled_output(predictor, payload, label).result


def embedding_of(output: PredictOutput) -> np.ndarray:
    embedding = output.private[EMBEDDING_KEY]
    assert isinstance(embedding, np.ndarray)
    return embedding


def claimed(user_id: uuid.UUID, params: dict[str, Any], job_id: uuid.UUID | None = None) -> Claimed:
    return Claimed(job_id or uuid.uuid4(), 1, user_id, None, None, params)


@pytest.fixture(scope="module")
def astronaut_gallery(enroll: FaceEnroll, astronaut: bytes) -> Gallery:
    embedding = embedding_of(enrolled_output(enroll, astronaut, "astronaut"))
    return Gallery([uuid.uuid4()], ["astronaut"], embedding[None, :])


def ask(
    predictor: FaceIdentify, payload: bytes, gallery: Gallery, threshold: float = MATCH_THRESHOLD
) -> dict[str, Any]:
    item = PredictInput(data=payload, text=None, params={"threshold": threshold}, context=gallery)
    return predictor.predict_batch([item])[0].result


def empty_gallery() -> Gallery:
    return Gallery([], [], np.zeros((0, 128), np.float32))


def assert_close_box(actual: dict[str, int], expected: Box, tolerance: float) -> None:
    for side, value in expected.as_dict().items():
        assert abs(actual[side] - value) <= tolerance, (side, actual, expected)


# -- catalog entries and parameters -----------------------------------------------------------------


def test_catalog_attributes() -> None:
    assert (FaceEnroll.slug, FaceEnroll.title, FaceEnroll.task) == (
        "face-enroll",
        "Face enrollment",
        "face-enrollment",
    )
    assert (FaceIdentify.slug, FaceIdentify.title, FaceIdentify.task) == (
        "face-identify",
        "Face identification",
        "face-identification",
    )
    assert FaceEnroll.input_kind == FaceIdentify.input_kind == "image"
    assert (FaceEnroll.default_price, FaceIdentify.default_price) == (4, 3)
    assert FaceEnroll.max_batch_size == FaceIdentify.max_batch_size == 4
    assert FaceEnroll.description
    assert FaceIdentify.description


def test_enroll_label_is_required_stripped_and_bounded() -> None:
    assert FaceEnroll.parse_params({"label": "  Ada Lovelace \n"}) == {"label": "Ada Lovelace"}
    assert FaceEnroll.parse_params({"label": "x" * 100}) == {"label": "x" * 100}
    for bad in ({}, {"label": ""}, {"label": "   "}, {"label": "x" * 101}, {"label": "a", "extra": 1}):
        with pytest.raises(InvalidInput) as caught:
            FaceEnroll.parse_params(bad)
        assert caught.value.code == "invalid_params"


def test_identify_threshold_default_and_bounds() -> None:
    assert FaceIdentify.parse_params({}) == {"threshold": 0.6}
    assert FaceIdentify.parse_params({"threshold": 0.3}) == {"threshold": 0.3}
    assert FaceIdentify.parse_params({"threshold": 0.8}) == {"threshold": 0.8}
    for bad in (
        {"threshold": 0.29},
        {"threshold": 0.81},
        {"threshold": math.nan},
        {"threshold": "strict"},
        {"label": "x"},
    ):
        with pytest.raises(InvalidInput) as caught:
            FaceIdentify.parse_params(bad)
        assert caught.value.code == "invalid_params"


# -- detection policy and model files -----------------------------------------------------------------


def test_detection_settings() -> None:
    # Large images are scanned downscaled to DETECT_MAX_SIDE on their long side, without upsampling.
    assert detection_settings(4032, 3024) == (DETECT_MAX_SIDE / 4032, 0)
    assert detection_settings(1000, 1600) == (DETECT_MAX_SIDE / 1600, 0)
    # Medium images as they are.
    assert detection_settings(DETECT_MAX_SIDE, 600) == (1.0, 0)
    assert detection_settings(512, 512) == (1.0, 0)
    # Small images upsampled once, so faces down to ~40 px are found.
    assert detection_settings(UPSAMPLE_MAX_SIDE, 300) == (1.0, 1)
    assert detection_settings(307, 307) == (1.0, 1)


def test_model_files_are_found_without_importing_the_package() -> None:
    shape, recognition = model_files()
    assert shape.name == "shape_predictor_5_face_landmarks.dat"
    assert recognition.name == "dlib_face_recognition_resnet_model_v1.dat"
    assert shape.is_file()
    assert recognition.is_file()
    assert FaceEnroll(Path("unused")).is_prepared()


def test_predict_before_load_fails(astronaut: bytes) -> None:
    with pytest.raises(RuntimeError, match=r"load\(\)"):
        FaceIdentify(Path("unused")).predict_batch(
            [PredictInput(data=astronaut, text=None, params={}, context=empty_gallery())]
        )


# -- enrollment: submit-time checks -------------------------------------------------------------------


def test_enroll_prepare_input_reports_image_and_one_face(astronaut: bytes) -> None:
    assert FaceEnroll.prepare_input(astronaut, None, LIMITS) == {
        "format": "jpeg",
        "width": 512,
        "height": 512,
        "faces": 1,
    }


def test_enroll_prepare_input_finds_a_small_face_by_upsampling(astronaut_transformed: bytes) -> None:
    metadata = FaceEnroll.prepare_input(astronaut_transformed, None, LIMITS)
    assert metadata == {"format": "jpeg", "width": 307, "height": 307, "faces": 1}


def test_enroll_prepare_input_rejects_a_photo_without_faces(chelsea: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        FaceEnroll.prepare_input(chelsea, None, LIMITS)
    assert (caught.value.code, caught.value.status_code) == ("no_face", 422)


def test_enroll_prepare_input_rejects_several_faces(two_faces: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        FaceEnroll.prepare_input(two_faces, None, LIMITS)
    assert (caught.value.code, caught.value.status_code) == ("multiple_faces", 422)
    assert "2 faces" in caught.value.message


@pytest.mark.parametrize(
    ("payload", "code"),
    [(None, "empty_input"), (b"", "empty_input"), (b"not an image", "unsupported_media_type")],
)
def test_prepare_input_rejects_unusable_uploads(payload: bytes | None, code: str) -> None:
    for predictor in (FaceEnroll, FaceIdentify):
        with pytest.raises(InvalidInput) as caught:
            predictor.prepare_input(payload, None, LIMITS)
        assert caught.value.code == code


def test_identify_prepare_input_accepts_photos_without_faces(chelsea: bytes) -> None:
    assert FaceIdentify.prepare_input(chelsea, None, LIMITS) == {
        "format": "jpeg",
        "width": 451,
        "height": 300,
    }


# -- enrollment: the worker ---------------------------------------------------------------------------


def test_enroll_returns_label_box_and_a_private_embedding(enroll: FaceEnroll, astronaut: bytes) -> None:
    output = enrolled_output(enroll, astronaut, "astronaut")
    result = output.result
    # The embedding is never part of the result a user reads.
    assert set(result) == {"label", "box", "embedding_stored"}
    assert set(output.private) == {EMBEDDING_KEY}
    assert result["label"] == "astronaut"
    assert result["embedding_stored"] is True
    assert result["box"] == ASTRONAUT_BOX.as_dict()
    embedding = embedding_of(output)
    assert embedding.shape == (128,)
    assert embedding.dtype == np.float32
    assert 0.5 < float(np.linalg.norm(embedding)) < 3.0


def test_enroll_worker_rechecks_the_face_count(enroll: FaceEnroll, chelsea: bytes, two_faces: bytes) -> None:
    for payload, code in ((chelsea, "no_face"), (two_faces, "multiple_faces")):
        with pytest.raises(InvalidInput) as caught:
            enrolled(enroll, payload, "x")
        assert caught.value.code == code


def test_stored_embedding_round_trip() -> None:
    vector = np.random.default_rng(1).normal(size=128).astype(np.float32)
    assert np.array_equal(decode_embedding(encode_embedding(vector)), vector)
    with pytest.raises(ValueError, match="128"):
        decode_embedding(encode_embedding(vector)[:40])


# -- identification -------------------------------------------------------------------------------------


def test_identify_matches_another_photo_of_the_enrolled_person(
    identify: FaceIdentify, astronaut_gallery: Gallery, astronaut_transformed: bytes
) -> None:
    result = ask(identify, astronaut_transformed, astronaut_gallery)
    assert result["gallery_size"] == 1
    (face,) = result["faces"]
    assert face["label"] == "astronaut"
    assert face["face_id"] == str(astronaut_gallery.ids[0])
    # A genuinely different photo (not ~0) that is still clearly the same person.
    assert 0.05 < face["distance"] < MATCH_THRESHOLD
    assert face["distance"] == round(face["distance"], 4)
    # The face is on the mirrored side: the original spans x 179-266 of 512, so here 307 - 0.6x.
    assert_close_box(face["box"], Box(307 - 160, 50, 307 - 107, 102), tolerance=12)


def test_identify_calls_a_different_person_unknown(
    identify: FaceIdentify, astronaut_gallery: Gallery, grace_hopper: bytes
) -> None:
    (face,) = ask(identify, grace_hopper, astronaut_gallery)["faces"]
    assert face["label"] == "unknown"
    assert face["face_id"] is None
    # The distance to the nearest entry is still reported.
    assert face["distance"] >= MATCH_THRESHOLD


def test_threshold_decides_what_counts_as_a_match(
    identify: FaceIdentify, astronaut_gallery: Gallery, grace_hopper: bytes
) -> None:
    strict = ask(identify, grace_hopper, astronaut_gallery)["faces"][0]
    lenient = ask(identify, grace_hopper, astronaut_gallery, threshold=0.8)["faces"][0]
    assert lenient["distance"] == strict["distance"] < 0.8
    assert lenient["label"] == "astronaut"


def test_identify_without_faces_is_an_empty_answer(
    identify: FaceIdentify, astronaut_gallery: Gallery, chelsea: bytes
) -> None:
    assert ask(identify, chelsea, astronaut_gallery) == {"faces": [], "gallery_size": 1}


def test_identify_against_an_empty_gallery(identify: FaceIdentify, astronaut: bytes) -> None:
    result = ask(identify, astronaut, empty_gallery())
    assert result == {
        "faces": [{"box": ASTRONAUT_BOX.as_dict(), "label": "unknown", "distance": None, "face_id": None}],
        "gallery_size": 0,
    }


def test_identify_names_every_face_left_to_right(
    enroll: FaceEnroll, identify: FaceIdentify, astronaut: bytes, grace_hopper: bytes, two_faces: bytes
) -> None:
    gallery = Gallery(
        [uuid.uuid4(), uuid.uuid4()],
        ["Grace", "astronaut"],
        np.stack(
            [
                embedding_of(enrolled_output(enroll, grace_hopper, "Grace")),
                embedding_of(enrolled_output(enroll, astronaut, "a")),
            ]
        ),
    )
    faces = ask(identify, two_faces, gallery)["faces"]
    assert [f["label"] for f in faces] == ["astronaut", "Grace"]
    assert [f["face_id"] for f in faces] == [str(gallery.ids[1]), str(gallery.ids[0])]
    assert faces[0]["box"]["right"] <= 400 <= faces[1]["box"]["left"]
    assert all(f["distance"] < MATCH_THRESHOLD for f in faces)

    # Mirrored, so that reading order differs from the detector's own (score) order in one case.
    mirrored = jpeg(np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(two_faces)))[:, ::-1]))
    faces = ask(identify, mirrored, gallery)["faces"]
    assert [f["label"] for f in faces] == ["Grace", "astronaut"]
    assert faces[0]["box"]["right"] <= 741 - 400 <= faces[1]["box"]["left"]


def test_a_batch_answers_like_single_calls(
    identify: FaceIdentify,
    astronaut_gallery: Gallery,
    astronaut_transformed: bytes,
    grace_hopper: bytes,
    chelsea: bytes,
    two_faces: bytes,
) -> None:
    # Images without faces in between check that each image gets its own faces back.
    payloads = [chelsea, astronaut_transformed, two_faces, grace_hopper]
    items = [PredictInput(data=p, text=None, params={}, context=astronaut_gallery) for p in payloads]
    batched = [output.result for output in identify.predict_batch(items)]
    single = [ask(identify, p, astronaut_gallery) for p in payloads]
    assert [len(r["faces"]) for r in batched] == [0, 1, 2, 1]
    for together, alone in zip(batched, single, strict=True):
        assert together["gallery_size"] == alone["gallery_size"]
        for a, b in zip(together["faces"], alone["faces"], strict=True):
            assert (a["box"], a["label"], a["face_id"]) == (b["box"], b["label"], b["face_id"])
            assert a["distance"] == pytest.approx(b["distance"], abs=1e-3)


def test_large_photos_are_scanned_downscaled_with_boxes_in_upload_coordinates(
    identify: FaceIdentify, astronaut_gallery: Gallery
) -> None:
    for side, image_format in ((1600, "JPEG"), (1300, "PNG")):
        buffer = io.BytesIO()
        Image.fromarray(astronaut_pixels()).resize((side, side), Image.Resampling.BICUBIC).save(
            buffer, image_format
        )
        (face,) = ask(identify, buffer.getvalue(), astronaut_gallery)["faces"]
        scale = side / 512
        expected = Box(*(round(v * scale) for v in ASTRONAUT_BOX.as_dict().values()))
        assert_close_box(face["box"], expected, tolerance=12 * scale)
        assert face["label"] == "astronaut"
        assert face["distance"] < 0.3


def test_identify_needs_the_gallery(identify: FaceIdentify, astronaut: bytes) -> None:
    with pytest.raises(RuntimeError, match="gallery"):
        identify.predict_batch([PredictInput(data=astronaut, text=None, params={})])


def test_match_faces_uses_the_nearest_entry_and_a_strict_threshold() -> None:
    rng = np.random.default_rng(7)
    references = rng.normal(0, 0.1, size=(50, 128)).astype(np.float32)
    references[30] = references[10]  # a duplicate enrollment: the earlier one wins
    ids = [uuid.uuid4() for _ in range(50)]
    gallery = Gallery(ids, [f"person {i}" for i in range(50)], references)
    query = references[10] + np.float32(0.01)
    box = Box(1, 2, 3, 4)

    (same,) = match_faces([Face(box, references[10].copy())], gallery, 0.6)
    assert (same["label"], same["face_id"], same["distance"]) == ("person 10", str(ids[10]), 0.0)

    (near,) = match_faces([Face(box, query)], gallery, 0.6)
    exact = float(np.linalg.norm(query.astype(np.float64) - references[10]))
    assert near["distance"] == round(exact, 4)
    assert near["label"] == "person 10"

    # Exactly at the threshold is not a match ("below 0.6").
    (at,) = match_faces([Face(box, query)], gallery, exact)
    assert (at["label"], at["face_id"]) == ("unknown", None)
    assert match_faces([], gallery, 0.6) == []


# -- hooks: the owner's gallery --------------------------------------------------------------------------


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[AsyncSession]:
    # The real tables on SQLite; foreign keys are not enforced (no PRAGMA), so no users or jobs
    # are needed for the gallery rows.
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'faces.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with async_sessionmaker(engine, expire_on_commit=False)() as db_session:
        yield db_session
    await engine.dispose()


async def test_on_success_stores_the_face_and_hides_the_embedding(
    session: AsyncSession, enroll: FaceEnroll, astronaut: bytes
) -> None:
    user_id, job_id = uuid.uuid4(), uuid.uuid4()
    output = enroll.predict_batch([PredictInput(data=astronaut, text=None, params={"label": "astronaut"})])[0]
    embedding = embedding_of(output)

    await GalleryWriter().on_success(session, claimed(user_id, {"label": "astronaut"}, job_id), output)

    assert EMBEDDING_KEY not in output.result
    assert set(output.result) == {"label", "box", "embedding_stored", "face_id"}
    entry = await session.get(FaceEntry, uuid.UUID(output.result["face_id"]))
    assert entry is not None
    assert (entry.user_id, entry.job_id, entry.label) == (user_id, job_id, "astronaut")
    assert np.array_equal(decode_embedding(entry.embedding), embedding)


async def test_on_success_without_an_embedding_fails(session: AsyncSession) -> None:
    output = PredictOutput(result={"label": "x", "box": {}, "embedding_stored": True})
    with pytest.raises(RuntimeError, match="embedding"):
        await GalleryWriter().on_success(session, claimed(uuid.uuid4(), {"label": "x"}), output)


async def test_enroll_then_identify_through_the_hooks_sees_only_the_owners_gallery(
    session: AsyncSession,
    enroll: FaceEnroll,
    identify: FaceIdentify,
    astronaut: bytes,
    astronaut_transformed: bytes,
    grace_hopper: bytes,
) -> None:
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    for user_id, payload, label in ((owner, astronaut, "astronaut"), (stranger, grace_hopper, "Grace")):
        params = FaceEnroll.parse_params({"label": label})
        output = enroll.predict_batch([PredictInput(data=payload, text=None, params=params)])[0]
        await GalleryWriter().on_success(session, claimed(user_id, params), output)
    await session.flush()

    gallery = await GalleryReader().load_context(session, claimed(owner, {"threshold": 0.6}))
    assert isinstance(gallery, Gallery)
    assert gallery.labels == ["astronaut"]

    # Grace Hopper is enrolled, but by someone else: for the owner she is unknown.
    for payload, label in ((astronaut_transformed, "astronaut"), (grace_hopper, "unknown")):
        (face,) = ask(identify, payload, gallery)["faces"]
        assert face["label"] == label
