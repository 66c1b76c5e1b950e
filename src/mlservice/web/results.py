"""What a finished job's result looks like on its page, by the model's task.

Each task has a template under ``templates/results/``; the functions here turn the job's stored
output into what that template draws (percentages, face boxes in image coordinates, a verdict's
colour). An output that does not have the expected shape, or a task without a template, is shown
as formatted JSON instead: a page never fails on a result it does not understand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultView:
    template: str | None  # None: the generic JSON view
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FaceMark:
    """A face's box and label, in the pixel coordinates of the image as displayed."""

    left: int
    top: int
    width: int
    height: int
    label: str
    known: bool
    distance: float | None
    text_x: int
    text_y: int


def _percent(value: Any) -> float:
    return round(float(value) * 100, 1)


def _classification(output: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    predictions = [
        {
            "label": str(p["label"]),
            "class_id": p.get("class_id"),
            "probability": float(p["probability"]),
            "percent": _percent(p["probability"]),
        }
        for p in output["predictions"]
    ]
    return {"predictions": predictions}


def _background_removal(output: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    fraction = output.get("foreground_fraction")
    return {
        "foreground_percent": _percent(fraction) if fraction is not None else None,
        "width": output.get("width"),
        "height": output.get("height"),
    }


def _movies(output: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    movies = []
    for item in output["results"]:
        genres = item.get("genres")
        movies.append(
            {
                "title": str(item["title"]),
                "year": item.get("year"),
                "genres": [str(g) for g in genres] if isinstance(genres, list) else [],
                "summary": item.get("summary") or "",
                "score": float(item["score"]),
                "score_percent": max(0.0, _percent(item["score"])),
            }
        )
    return {"query": output.get("query"), "movies": movies}


def _mark(box: Mapping[str, Any], label: str, known: bool, distance: Any, size: int) -> FaceMark:
    left, top = int(box["left"]), int(box["top"])
    right, bottom = int(box["right"]), int(box["bottom"])
    # The label sits above the box, or inside its top edge when the box touches the image's top.
    text_y = top - size // 4 if top > size else top + size
    return FaceMark(
        left=left,
        top=top,
        width=max(1, right - left),
        height=max(1, bottom - top),
        label=label,
        known=known,
        distance=float(distance) if distance is not None else None,
        text_x=left,
        text_y=text_y,
    )


def _canvas(meta: Mapping[str, Any]) -> dict[str, int]:
    width, height = int(meta["width"]), int(meta["height"])
    # Labels scale with the picture, so they read the same on any screen the image is shown on.
    return {"width": width, "height": height, "font_size": max(10, round(max(width, height) / 28))}


def _face_enrollment(output: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    canvas = _canvas(meta)
    label = str(output["label"])
    mark = _mark(output["box"], label, True, None, canvas["font_size"])
    return {**canvas, "label": label, "face_id": output.get("face_id"), "marks": [mark]}


def _face_identification(output: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    canvas = _canvas(meta)
    marks = [
        _mark(
            face["box"],
            str(face["label"]),
            face.get("face_id") is not None,
            face.get("distance"),
            canvas["font_size"],
        )
        for face in output["faces"]
    ]
    return {**canvas, "marks": marks, "gallery_size": output.get("gallery_size")}


_VERDICT_CLASSES = {"clean": "ok", "unscannable": "warn", "suspicious": "warn", "malicious": "danger"}
_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


def _malware(output: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    verdict = str(output["verdict"])
    reasons = sorted(
        (dict(r) for r in output.get("reasons") or []),
        key=lambda r: _SEVERITY_ORDER.get(str(r.get("severity")), 9),
    )
    malconv = output.get("malconv")
    pe = output.get("pe")
    return {
        "verdict": verdict,
        "verdict_class": _VERDICT_CLASSES.get(verdict, "neutral"),
        "score": float(output["score"]),
        "score_percent": _percent(output["score"]),
        "kind": output.get("kind"),
        "sha256": output.get("sha256"),
        "reasons": reasons,
        "pe": pe if isinstance(pe, dict) else None,
        "malconv": malconv if isinstance(malconv, dict) else None,
    }


_VIEWS: dict[str, tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]]] = {
    "image-classification": ("results/classification.html", _classification),
    "background-removal": ("results/background_removal.html", _background_removal),
    "text-search": ("results/movies.html", _movies),
    "face-enrollment": ("results/faces.html", _face_enrollment),
    "face-identification": ("results/faces.html", _face_identification),
    "malware-detection": ("results/malware.html", _malware),
}


def job_result_view(
    task: str, output: Mapping[str, Any] | None, meta: Mapping[str, Any]
) -> ResultView | None:
    """How to draw ``output`` (None while the job has none)."""
    if output is None:
        return None
    found = _VIEWS.get(task)
    if found is None:
        return ResultView(None)
    template, build = found
    try:
        return ResultView(template, build(output, meta))
    except (KeyError, TypeError, ValueError):
        log.warning("a %s result does not have the expected shape; shown as JSON", task, exc_info=True)
        return ResultView(None)
