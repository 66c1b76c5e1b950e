"""Errors as Replicate answers them: problem documents, and the route class of every ``/v1`` route
that turns its errors into them and writes refused prediction requests to the request history."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from mlservice.errors import describe_error
from mlservice.history.recording import MAX_SLUG_LENGTH, RequestRecord
from mlservice.history.usecases import record_refusal
from mlservice.replicate.schemas import Problem

# The ``request.state`` attribute that holds a prediction request's history record until the
# prediction is accepted: while it is set, an error is a refusal to record.
RECORD_STATE = "replicate_prediction_record"

# Replicate's clients show 401s to people: say what to send.
_UNAUTHENTICATED = "Authentication required: send `Authorization: Bearer <token or API key>`."


def problem_response(exc: Exception) -> JSONResponse | None:
    """Replicate's error body (``title``, ``status``, ``detail``: what its clients read) with our
    ``code`` and details; None for an exception that is a bug (left to the 500 handler)."""
    info = describe_error(exc)
    if info.is_bug:
        return None
    message = _UNAUTHENTICATED if info.code == "not_authenticated" else info.message
    body: dict[str, Any] = {
        "title": HTTPStatus(info.status_code).phrase,
        "status": info.status_code,
        "detail": message,
        "code": info.code,
    }
    if info.details:
        body["details"] = info.details
    return JSONResponse(body, status_code=info.status_code, headers=info.headers)


class ReplicateRoute(APIRoute):
    """A ``/v1`` route: its errors, those of its dependencies (authentication, rate limits) and of
    request validation included, are answered in Replicate's shape, and a refused prediction
    request is written to the request history as ``POST /api/jobs`` writes it.

    The errors are turned into answers inside the route, so dependencies with ``yield`` see no
    exception: a ``/v1`` route writes only through use cases, which own their transactions.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                problem = problem_response(exc)
                if problem is None:
                    raise
                record: RequestRecord | None = getattr(request.state, RECORD_STATE, None)
                if record is not None:
                    await _describe_refused(record, request)
                    await record_refusal(request.app.state.components.db, record, exc)
                response = problem
            # What /api answers get from the security headers: tokens and account data stay out of caches.
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return answer


async def _describe_refused(record: RequestRecord, request: Request) -> None:
    """Name the model of a request refused before it was read (e.g. a body that failed validation)."""
    if record.model_slug is not None:
        return
    try:
        body = await request.json()
    except Exception:  # no body, not JSON, or over the size limit: nothing to name
        return
    version = body.get("version") if isinstance(body, dict) else None
    if isinstance(version, str):
        record.model_slug = version[:MAX_SLUG_LENGTH]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses, each a :class:`Problem`."""
    return {code: {"model": Problem, "description": HTTPStatus(code).phrase} for code in codes}
