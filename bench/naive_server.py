"""The naive baseline of bench/scale.py: what a simple FastAPI app serving the classifier looks like.

    NAIVE_MODEL_CACHE=var/test-models .venv/bin/uvicorn bench.naive_server:app --port 8100

One ONNX session loaded at startup, and a plain ``def`` handler (FastAPI runs it in its thread pool)
that decodes, preprocesses and runs the model inline and answers with the labels. No accounts, no
database, no queue, no batching. Decoding and preprocessing are the classifier's own functions, so
the comparison with the service is about serving, not about image code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, UploadFile

from mlservice.predictors.image_classifier import (
    CROP_PADDING,
    INPUT_SIZE,
    MODEL_FILENAME,
    load_labels,
    preprocess,
)
from mlservice.predictors.images import WORKER_BACKSTOP_LIMITS, read_image

CACHE = Path(os.environ.get("NAIVE_MODEL_CACHE", "var/models"))
session = ort.InferenceSession(str(CACHE / MODEL_FILENAME), providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
labels = load_labels()

app = FastAPI(title="naive classifier")


@app.post("/classify")
def classify(file: Annotated[UploadFile, File()], top_k: int = 5) -> dict[str, Any]:
    data = file.file.read()
    decoded = read_image(data, WORKER_BACKSTOP_LIMITS, min_side=INPUT_SIZE + CROP_PADDING)
    logits = session.run(None, {input_name: preprocess([decoded.image])})[0][0]
    exp = np.exp(logits - logits.max())
    probabilities = exp / exp.sum()
    best = np.argsort(-probabilities, kind="stable")[:top_k]
    return {
        "predictions": [
            {"label": labels[i], "class_id": int(i), "probability": round(float(probabilities[i]), 6)}
            for i in best
        ]
    }


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
