"""Validation and decoding of uploaded images (mlservice.predictors.images)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as samples

from mlservice.predictors.base import InputLimits, InvalidInput
from mlservice.predictors.images import decode_image, inspect_image, read_image

LIMITS = InputLimits(max_upload_bytes=20 * 1024 * 1024, max_image_pixels=50_000_000)

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def red_blue(width: int = 64, height: int = 48) -> Image.Image:
    """Left half red, right half blue: shows both colour fidelity and geometry after decoding."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


def mean_colour(image: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    colour: np.ndarray = np.asarray(image.crop(box), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return colour


def sample(name: str) -> np.ndarray:
    """A scikit-image sample picture (bundled with the package, no download)."""
    pixels: np.ndarray = np.asarray(getattr(samples, name)())
    return pixels


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid, fully decodable all-black 1-bit PNG, built row by row so that even a
    20000x20000 one costs a few hundred milliseconds and tens of kilobytes, never 400 MB."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none" + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def expect_invalid(call: Callable[[], object], code: str, status: int) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.code == code
    assert caught.value.status_code == status
    assert caught.value.message
    return caught.value


# -- accepted formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pillow_format", "reported", "options"),
    [
        ("JPEG", "jpeg", {"quality": 95}),
        ("PNG", "png", {}),
        ("WEBP", "webp", {"lossless": True}),
        ("BMP", "bmp", {}),
        ("GIF", "gif", {}),
        ("TIFF", "tiff", {}),
    ],
)
def test_supported_formats_are_detected_by_content_and_decoded(
    pillow_format: str, reported: str, options: dict[str, Any]
) -> None:
    payload = encode(red_blue(), pillow_format, **options)

    assert inspect_image(payload, LIMITS) == {"format": reported, "width": 64, "height": 48}
    image = decode_image(payload, LIMITS)
    assert image.mode == "RGB"
    assert image.size == (64, 48)
    assert np.allclose(mean_colour(image, (0, 0, 24, 48)), RED, atol=12)
    assert np.allclose(mean_colour(image, (40, 0, 64, 48)), BLUE, atol=12)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), (0, 255, 0))]
    payload = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)

    image = decode_image(payload, LIMITS)
    assert image.getpixel((8, 8)) == RED


# -- rejected inputs --------------------------------------------------------------------------------


def test_empty_input() -> None:
    expect_invalid(lambda: decode_image(b"", LIMITS), "empty_input", 422)
    expect_invalid(lambda: inspect_image(b"", LIMITS), "empty_input", 422)


@pytest.mark.parametrize(
    "payload",
    [
        b"hello, this is plain text and not an image",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n",
        bytes(range(256)) * 4,
        # Real images in formats Pillow reads but the service does not accept.
        encode(Image.new("RGB", (16, 16), RED), "PPM"),
        encode(Image.new("RGB", (16, 16), RED), "ICO"),
    ],
    ids=["text", "pdf", "binary", "ppm", "ico"],
)
def test_non_images_and_unaccepted_formats_are_unsupported_media(payload: bytes) -> None:
    expect_invalid(lambda: inspect_image(payload, LIMITS), "unsupported_media_type", 415)
    expect_invalid(lambda: decode_image(payload, LIMITS), "unsupported_media_type", 415)


def test_truncated_jpeg_is_corrupt_even_though_its_header_parses() -> None:
    whole = encode(Image.fromarray(sample("chelsea")), "JPEG", quality=90)
    truncated = whole[: len(whole) // 2]
    # The header is intact, so only decoding the pixels can notice the missing half.
    assert Image.open(io.BytesIO(truncated)).size == (451, 300)

    expect_invalid(lambda: inspect_image(truncated, LIMITS), "corrupt_image", 422)
    expect_invalid(lambda: decode_image(truncated, LIMITS), "corrupt_image", 422)


def test_truncated_png_is_corrupt() -> None:
    whole = encode(Image.fromarray(sample("coffee")), "PNG")
    expect_invalid(lambda: decode_image(whole[: len(whole) // 3], LIMITS), "corrupt_image", 422)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a\x01"],
    ids=["jpeg-magic-only", "png-without-header", "gif-stub"],
)
def test_broken_headers_of_accepted_formats_are_corrupt(payload: bytes) -> None:
    expect_invalid(lambda: inspect_image(payload, LIMITS), "corrupt_image", 422)


# -- pixel limits -----------------------------------------------------------------------------------


def test_decompression_bomb_is_rejected_from_the_header() -> None:
    bomb = bilevel_png(20_000, 20_000)
    assert len(bomb) < 200_000  # 400 million pixels in a small upload: the attack being tested

    expect_invalid(lambda: inspect_image(bomb, LIMITS), "image_too_large", 413)
    expect_invalid(lambda: decode_image(bomb, LIMITS), "image_too_large", 413)


def test_pillow_bomb_error_is_mapped_when_the_configured_limit_is_higher() -> None:
    # With a limit above Pillow's own hard ceiling, Pillow's DecompressionBombError is what fires.
    generous = InputLimits(max_upload_bytes=LIMITS.max_upload_bytes, max_image_pixels=10**12)
    expect_invalid(lambda: decode_image(bilevel_png(20_000, 20_000), generous), "image_too_large", 413)


def test_pixel_limit_is_checked_before_any_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = bilevel_png(3_000, 3_000)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    small = InputLimits(max_upload_bytes=LIMITS.max_upload_bytes, max_image_pixels=1_000_000)
    expect_invalid(lambda: decode_image(payload, small), "image_too_large", 413)


def test_pixel_limit_is_inclusive() -> None:
    payload = encode(Image.new("RGB", (100, 50), RED), "PNG")
    exact = InputLimits(max_upload_bytes=LIMITS.max_upload_bytes, max_image_pixels=5_000)
    below = InputLimits(max_upload_bytes=LIMITS.max_upload_bytes, max_image_pixels=4_999)

    assert decode_image(payload, exact).size == (100, 50)
    expect_invalid(lambda: decode_image(payload, below), "image_too_large", 413)


# -- colour modes -----------------------------------------------------------------------------------


def test_alpha_is_composited_onto_white() -> None:
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 0))  # fully transparent green must not show through

    image = decode_image(encode(rgba, "PNG"), LIMITS)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((1, 0)) == (255, 255, 255)


def test_palette_transparency_is_composited_onto_white() -> None:
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([0, 0, 255, 0, 0, 0] + [0] * 762)
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)

    image = decode_image(encode(palette_image, "PNG", transparency=1), LIMITS)
    assert image.getpixel((0, 0)) == BLUE
    assert image.getpixel((1, 0)) == (255, 255, 255)


def test_grayscale_becomes_three_equal_channels() -> None:
    image = decode_image(encode(Image.new("L", (4, 4), 77), "PNG"), LIMITS)
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (77, 77, 77)


def test_bilevel_image_becomes_rgb() -> None:
    image = decode_image(bilevel_png(8, 8), LIMITS)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 0, 0)


def test_sixteen_bit_grayscale_is_rescaled_not_clipped() -> None:
    source = Image.fromarray(np.array([[0, 32_896, 65_535]], dtype=np.uint16))
    payload = encode(source, "PNG")
    assert Image.open(io.BytesIO(payload)).mode.startswith("I")

    image = decode_image(payload, LIMITS)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_cmyk_jpeg_becomes_rgb() -> None:
    payload = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red
    image = decode_image(payload, LIMITS)
    assert image.mode == "RGB"
    assert np.allclose(mean_colour(image, (0, 0, 16, 16)), RED, atol=12)


# -- orientation and scaled decoding ----------------------------------------------------------------


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_rotation_is_applied() -> None:
    # Orientation 6: the stored pixels must be turned 90 degrees clockwise for display, so the
    # stored left (red) half ends up on top.
    payload = jpeg_with_orientation(red_blue(40, 20), 6)

    assert inspect_image(payload, LIMITS) == {"format": "jpeg", "width": 20, "height": 40}
    image = decode_image(payload, LIMITS)
    assert image.size == (20, 40)
    assert np.allclose(mean_colour(image, (0, 0, 20, 16)), RED, atol=12)
    assert np.allclose(mean_colour(image, (0, 24, 20, 40)), BLUE, atol=12)


def test_exif_half_turn_is_applied() -> None:
    image = decode_image(jpeg_with_orientation(red_blue(40, 20), 3), LIMITS)
    assert image.size == (40, 20)
    assert np.allclose(mean_colour(image, (0, 0, 16, 20)), BLUE, atol=12)
    assert np.allclose(mean_colour(image, (24, 0, 40, 20)), RED, atol=12)


def test_scaled_jpeg_decoding_keeps_the_full_size_metadata() -> None:
    payload = encode(red_blue(2048, 1536), "JPEG", quality=90)

    decoded = read_image(payload, LIMITS, min_side=256)
    assert (decoded.width, decoded.height) == (2048, 1536)
    assert decoded.image.size == (512, 384)  # 1/4 scale: the largest that keeps both sides >= 256
    assert min(decoded.image.size) >= 256
    assert decode_image(payload, LIMITS).size == (2048, 1536)
