"""The headers of a submit, for ``POST /api/jobs`` and ``/v1``'s predictions alike: ``Prefer: wait``
(RFC 7240), a submit that answers with the finished job, and ``Cancel-After``, a deadline."""

from __future__ import annotations

import re

from mlservice.errors import AppError

MAX_WAIT_S = 60


class InvalidPrefer(AppError):
    status_code = 400
    code = "invalid_prefer"


def wait_seconds(prefer: str | None) -> float | None:
    """The wait that a ``Prefer`` header asks for (``wait`` is 60 s, ``wait=N`` 1 to 60 s)."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue  # preferences we do not know are ignored, as RFC 7240 asks
        value = value.strip().strip('"')
        if not value:
            return MAX_WAIT_S
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_WAIT_S:
            raise InvalidPrefer(f"`Prefer: wait=N` takes N from 1 to {MAX_WAIT_S} seconds.")
        return int(value)
    return None


# -- Cancel-After (Replicate's deadline) ----------------------------------------------------------

MIN_CANCEL_AFTER_S = 1
MAX_CANCEL_AFTER_S = 7 * 24 * 3600
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class InvalidCancelAfter(AppError):
    status_code = 400
    code = "invalid_cancel_after"


def cancel_after_seconds(value: str | None) -> float | None:
    """The deadline a ``Cancel-After`` header sets, in seconds from now: a duration such as
    ``30s``, ``5m``, ``1h30m`` or ``1.5h``, or a bare number of seconds."""
    if value is None or not value.strip():
        return None
    text = value.strip().lower()
    seconds: float
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    elif re.fullmatch(f"(?:{_DURATION.pattern})+", text):
        seconds = sum(float(amount) * _UNITS[unit] for amount, unit in _DURATION.findall(text))
    else:
        raise InvalidCancelAfter(
            "`Cancel-After` takes a duration such as 30s, 5m or 1h30m (or a number of seconds)."
        )
    if not MIN_CANCEL_AFTER_S <= seconds <= MAX_CANCEL_AFTER_S:
        raise InvalidCancelAfter(
            f"`Cancel-After` must be from {MIN_CANCEL_AFTER_S} s to {MAX_CANCEL_AFTER_S // 86400} days."
        )
    return seconds
