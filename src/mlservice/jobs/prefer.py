"""``Prefer: wait`` (RFC 7240): a submit that answers with the finished job, for ``POST /api/jobs``
and ``/v1``'s predictions alike."""

from __future__ import annotations

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
