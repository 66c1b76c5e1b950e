"""The predictor contract.

A predictor is one model in the catalog. It declares what it is (slug, task, price, input kind,
parameters) and implements two phases, following the setup/predict split of cog and BentoML:

* ``prepare_input`` runs in the API process at submit time, before any credit is held. It checks
  the uploaded bytes and parameters and raises :class:`InvalidInput` for anything it cannot run on.
  It must be cheap: no model is loaded for it.
* ``load`` runs once per worker process; ``predict_batch`` takes a list of prepared inputs and
  returns one JSON-serialisable output per input, in order.

A predictor with long steps reports its progress and looks for a cancel between steps through
each input's :class:`JobControl` (``inputs[i].control``); one that does neither is still canceled,
its output dropped when it returns.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

# Part of the predictor contract: a predictor refuses what it cannot run with it.
from mlservice.errors import InvalidInput as InvalidInput

InputKind = Literal["image", "text", "file"]


class PermanentError(Exception):
    """A model failure that no later attempt could fix (a deterministic bug on this input, say): the
    job fails at once instead of being retried. Its message is shown to the job's owner."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class InputLimits:
    """Limits the API enforces on uploads before a predictor sees them."""

    max_upload_bytes: int
    max_image_pixels: int


class JobCanceled(Exception):
    """Raised by :meth:`JobControl.check` once the job is canceled: the predictor stops there."""


ProgressSink = Callable[[float, str], None]


class JobControl:
    """The running job as its predictor sees it: report progress, notice a cancel.

    Called from the predictor's thread; the worker sets :attr:`canceled` from its event loop when
    the job's owner cancels it or its deadline passes. Both are cheap enough to call per step.
    """

    def __init__(self, on_progress: ProgressSink | None = None) -> None:
        self._canceled = threading.Event()
        self._on_progress = on_progress

    @property
    def canceled(self) -> bool:
        return self._canceled.is_set()

    def cancel(self) -> None:
        self._canceled.set()

    def check(self) -> None:
        """Raise :class:`JobCanceled` if the job was canceled: call it between long steps."""
        if self._canceled.is_set():
            raise JobCanceled

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the job is, ``fraction`` in [0, 1] (clamped), with a short message.

        Reports are coalesced: the job shows the latest within a fraction of a second.
        """
        if self._on_progress is not None:
            self._on_progress(min(max(float(fraction), 0.0), 1.0), message)


@dataclass
class PredictInput:
    """What a worker hands to ``predict_batch`` for one job."""

    data: bytes | None
    text: str | None
    params: dict[str, Any]
    # What the model's job hooks loaded for this job's owner (e.g. their face gallery).
    context: Any = None
    control: JobControl = field(default_factory=JobControl)


@dataclass(frozen=True)
class Artifact:
    """A file a job produces, stored with the job and downloadable by its owner only."""

    data: bytes
    media_type: str
    filename: str


@dataclass
class PredictOutput:
    result: dict[str, Any]
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # name -> file
    # What the model made for the job's hooks only (an enrollment's embedding, say): handed to
    # them in the result's transaction, never written into the result a user reads.
    private: dict[str, Any] = field(default_factory=dict)


class Predictor(ABC):
    slug: ClassVar[str]
    title: ClassVar[str]
    task: ClassVar[str]
    description: ClassVar[str]
    input_kind: ClassVar[InputKind]
    params_model: ClassVar[type[BaseModel]] = NoParams
    default_price: ClassVar[int]
    max_batch_size: ClassVar[int] = 1
    max_wait_ms: ClassVar[int] = 0
    # Where a result names its answer (a classifier's top label, a verdict), as keys and list
    # indexes into ``PredictOutput.result``: request history shows it, statistics count it.
    result_label: ClassVar[tuple[str | int, ...] | None] = None
    # Where a result lists what it found (faces, search results): request history shows how many.
    result_items: ClassVar[tuple[str | int, ...] | None] = None

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    @classmethod
    def parse_params(cls, raw: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        try:
            return cls.params_model.model_validate(raw).model_dump()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidInput(f"Invalid parameters: {problems}", code="invalid_params") from exc

    @classmethod
    @abstractmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        """Validate an upload; return metadata about it (e.g. image size) to keep with the job."""

    def is_prepared(self) -> bool:
        """True when the files ``prepare`` builds exist in the model cache and every model file
        passes its SHA-256 check (:mod:`mlservice.predictors.checksums`)."""
        return True

    def prepare(self) -> None:
        """Verify the packaged model files and build model files into the cache (``mlservice
        models prepare``); idempotent. A file that fails its check raises ``ModelFileMismatch``."""
        return None

    @abstractmethod
    def load(self) -> None:
        """Load the model into memory and warm it up."""

    @abstractmethod
    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        """Run the model on a batch; one output per input, in order."""
