"""Decoding and validation of uploaded images.

Everything that turns untrusted bytes into pixels goes through here, so the failure modes are
mapped to stable :class:`InvalidInput` codes in one place:

* ``empty_input`` (422): no bytes at all.
* ``unsupported_media_type`` (415): not an image, or an image format we do not accept.
* ``image_too_large`` (413): more pixels than ``InputLimits.max_image_pixels``. This is decided from
  the header, before any pixel is decoded, so a decompression bomb costs nothing.
* ``corrupt_image`` (422): recognisably one of our formats but it does not decode (truncated,
  damaged). Only a full decode finds truncation, so validation really decodes the pixels.
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from mlservice.predictors.base import InputLimits, InvalidInput

# Pillow format name -> the name we report. MPO is how Pillow labels the multi-picture JPEGs many
# phones write; to a client it is just a JPEG.
_FORMATS: Final[dict[str, str]] = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "GIF": "gif",
    "TIFF": "tiff",
}

# Leading bytes of the accepted formats. When Pillow cannot even parse the header, these tell a
# damaged image (422, the client sent the right kind of file) from something that is not an image
# at all (415).
_SIGNATURES: Final[tuple[bytes, ...]] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # little-endian TIFF
    b"MM\x00*",  # big-endian TIFF
)

# Orientations 5-8 include a quarter turn, so the displayed width and height are swapped.
_SWAPPING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})

# Transparent areas are shown on white by browsers and viewers; compositing onto black (or
# dropping alpha, which exposes whatever colour the encoder left under transparent pixels) would
# show the model something nobody sees.
_BACKGROUND: Final = (255, 255, 255)

# For predictors built without limits (workers, benchmarks): the API already applied the configured
# limits at submit, so this is only a backstop against memory exhaustion.
WORKER_BACKSTOP_LIMITS: Final = InputLimits(max_upload_bytes=0, max_image_pixels=100_000_000)


@dataclass(frozen=True)
class DecodedImage:
    """An image that passed validation. ``width``/``height`` are as displayed (EXIF-rotated) at full
    resolution, even when ``image`` was decoded at a reduced scale."""

    image: Image.Image
    format: str
    width: int
    height: int


def decode_image(data: bytes, limits: InputLimits, *, min_side: int | None = None) -> Image.Image:
    """Validate ``data`` and decode it to an upright RGB image.

    ``min_side`` lets a JPEG be decoded at a reduced scale (1/2, 1/4 or 1/8, done inside the DCT so
    it is several times faster) as long as both sides stay at least ``min_side`` pixels. Use it
    only when the caller downsamples anyway.
    """
    return read_image(data, limits, min_side=min_side).image


def inspect_image(data: bytes, limits: InputLimits) -> dict[str, Any]:
    """Validate ``data`` as :func:`decode_image` does; return its format and displayed size."""
    # Scaled decoding still runs the entropy decoder over the whole stream, so truncation and
    # damage are found at a fraction of the cost of a full-resolution decode.
    decoded = read_image(data, limits, min_side=64, to_rgb=False)
    return {"format": decoded.format, "width": decoded.width, "height": decoded.height}


def read_image(
    data: bytes, limits: InputLimits, *, min_side: int | None = None, to_rgb: bool = True
) -> DecodedImage:
    """The full validation and decode pipeline behind :func:`decode_image`/:func:`inspect_image`."""
    image = _open(data, limits)
    fmt = _FORMATS[str(image.format)]
    width, height = image.size
    if _header_orientation(image) in _SWAPPING_ORIENTATIONS:
        width, height = height, width

    if min_side is not None and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (min_side, min_side))
    _load(image, limits)
    if not to_rgb:
        return DecodedImage(image, fmt, width, height)

    return DecodedImage(_to_rgb(_upright(image)), fmt, width, height)


def _open(data: bytes, limits: InputLimits) -> ImageFile.ImageFile:
    if not data:
        raise InvalidInput("The uploaded file is empty.", code="empty_input", status_code=422)

    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_pillow_formats())
    except Image.DecompressionBombError as exc:
        raise _too_large(limits) from exc
    except UnidentifiedImageError as exc:
        if data.startswith(_SIGNATURES) or _is_webp(data):
            raise _corrupt() from exc
        raise InvalidInput(
            "The uploaded file is not a supported image (JPEG, PNG, WEBP, BMP, GIF or TIFF).",
            code="unsupported_media_type",
            status_code=415,
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # A plugin that recognised its format and then tripped over the header: the file is of the
        # right kind but damaged. Pillow raises many exception types here (SyntaxError, struct
        # errors, ValueError...), so they are caught broadly.
        raise _corrupt() from exc

    width, height = image.size
    if width <= 0 or height <= 0:
        raise _corrupt()
    if width * height > limits.max_image_pixels:
        raise _too_large(limits)
    return image


def _load(image: ImageFile.ImageFile, limits: InputLimits) -> None:
    try:
        image.load()
    except MemoryError:
        raise
    except Image.DecompressionBombError as exc:
        # Some containers (e.g. a GIF whose later frame descriptor is larger) only reveal their
        # true size while loading.
        raise _too_large(limits) from exc
    except Exception as exc:
        # Truncated data surfaces as OSError, other damage as whatever the decoder raises.
        raise _corrupt() from exc


@functools.cache
def _pillow_formats() -> tuple[str, ...]:
    # ``open`` with an explicit format list only considers plugins already registered, and Pillow
    # registers some of ours (MPO, WEBP, TIFF) lazily.
    Image.init()
    return tuple(name for name in _FORMATS if name in Image.OPEN)


def _header_orientation(image: ImageFile.ImageFile) -> int:
    """The EXIF orientation, read without decoding pixels (unlike ``getexif`` on some formats)."""
    try:
        if image.format == "TIFF":
            # TIFF keeps orientation among its ordinary tags, already parsed by ``open``.
            exif = image.getexif()
        elif "exif" in image.info:
            exif = Image.Exif()
            exif.load(image.info["exif"])
        else:
            return 1
        return int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception:
        # Broken metadata must not reject otherwise good pixels.
        return 1


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Same reasoning as _header_orientation: a damaged EXIF block is not a damaged image.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        # Palette images may carry transparency in ``info``; going through RGBA honours it.
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_gray_to_rgb(image)
    try:
        # 1, L, CMYK, YCbCr, ... have direct conversions in Pillow.
        return image.convert("RGB")
    except ValueError as exc:
        raise InvalidInput(
            f"Images with colour mode {mode!r} are not supported.",
            code="unsupported_media_type",
            status_code=415,
        ) from exc


def _high_depth_gray_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own convert("L") clips 16-bit values at 255 instead of rescaling, which turns almost
    # every 16-bit grayscale picture white.
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        # Float images are conventionally in [0, 1]; anything else is taken as already 8-bit.
        scale = 255.0 if values.size and float(values.max()) <= 1.0 else 1.0
    elif image.mode.startswith("I;16") or (values.size and float(values.max()) > 255.0):
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _corrupt() -> InvalidInput:
    return InvalidInput(
        "The image could not be decoded; it is truncated or damaged.", code="corrupt_image", status_code=422
    )


def _too_large(limits: InputLimits) -> InvalidInput:
    return InvalidInput(
        f"The image has too many pixels (the limit is {limits.max_image_pixels:,} pixels).",
        code="image_too_large",
        status_code=413,
    )
