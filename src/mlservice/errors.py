"""One error model: every refusal is an :class:`AppError` (or an exception of the web framework),
and :func:`describe_error` maps any exception to its HTTP status, stable code, message and
details. Every renderer uses that one mapping: the JSON error body of ``/api`` (installed here),
the HTML error pages, ``/v1``'s problem documents, the request history's refusals and the bot's
replies."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException


class AppError(Exception):
    status_code: int = 400
    code: str = "bad_request"
    headers: dict[str, str] | None = None  # e.g. Retry-After on a 429

    def __init__(
        self, message: str, *, code: str | None = None, status_code: int | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details


RETRY_AFTER_S = 5


class ServiceUnavailable(AppError):
    """A dependency (the database) cannot be reached: 503 with ``Retry-After``; nothing was
    charged or lost (what did not commit did not happen), and the client may retry (with the same
    Idempotency-Key)."""

    status_code = 503
    code = "service_unavailable"
    headers = {"Retry-After": str(RETRY_AFTER_S)}  # noqa: RUF012 (read only)

    def __init__(self, dependency: str = "database") -> None:
        super().__init__(f"The {dependency} is unreachable; please try again shortly.", dependency=dependency)


# What the database driver raises when the server cannot be reached or went away (refused, shut
# down, starting up, the connection lost): an outage, not a bug.
_OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, broken pipe
    socket.gaierror,
    TimeoutError,  # connecting, or a pool's checkout
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (from the database driver, perhaps wrapped by SQLAlchemy) says the server is
    unreachable."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class InvalidInput(AppError):
    """The input or parameters of a job cannot be run by the model (422 unless said otherwise; a
    predictor raises it at submit, before anything is charged, and a worker fails the job with it,
    without retries)."""

    status_code = 422
    code = "invalid_input"

    def __init__(self, message: str, code: str = "invalid_input", status_code: int = 422) -> None:
        super().__init__(message, code=code, status_code=status_code)


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable, e.g. `insufficient_credits`")
    message: str = Field(description="For people")
    details: dict[str, Any] | None = Field(default=None, description="Facts about this error, by code")


class ErrorResponse(BaseModel):
    """The body of every error answer, whatever raised it (see :func:`install_error_handlers`)."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "Bad request",
    401: "Not authenticated",
    402: "Not enough credits",
    403: "Not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    410: "Gone (e.g. a job's files expired)",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    503: "Unavailable",
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the errors a route answers with, all in the one error shape."""
    return {
        code: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS.get(code, "Error")}
        for code in status_codes
    }


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


_STATUS_CODES = {
    401: ("not_authenticated", "Authentication required."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("request_too_large", "The request body is too large."),
}


def _http_exception(exc: StarletteHTTPException) -> tuple[str, str]:
    detail = exc.detail
    if isinstance(detail, dict) and "code" in detail:  # ours, e.g. PayloadTooLarge
        return str(detail["code"]).lower(), str(
            detail.get("message") or detail.get("reason") or detail["code"]
        )
    if exc.status_code in _STATUS_CODES:
        code, message = _STATUS_CODES[exc.status_code]
        if isinstance(detail, str) and detail and detail.lower() not in {"not found", "unauthorized"}:
            message = detail
        return code, message
    return f"http_{exc.status_code}", str(detail)


@dataclass(frozen=True)
class ErrorInfo:
    """What a client is told about an exception, whatever the renderer."""

    status_code: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_bug(self) -> bool:
        """An exception nobody raised on purpose: logged and answered as a 500."""
        return self.code == "internal_error"


INTERNAL_ERROR = ErrorInfo(500, "internal_error", "Something went wrong on our side; please try again.")


def describe_error(exc: BaseException) -> ErrorInfo:
    """The one mapping from an exception to what the client is told."""
    if isinstance(exc, AppError):
        return ErrorInfo(exc.status_code, exc.code, exc.message, dict(exc.details), dict(exc.headers or {}))
    if isinstance(exc, RequestValidationError):
        problems = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'request'}: {p['message']}" for p in problems)
        return ErrorInfo(422, "validation_error", f"Invalid request: {summary}", {"fields": problems})
    if isinstance(exc, StarletteHTTPException):
        code, message = _http_exception(exc)
        return ErrorInfo(exc.status_code, code, message, {}, dict(getattr(exc, "headers", None) or {}))
    return INTERNAL_ERROR


def error_json(info: ErrorInfo) -> JSONResponse:
    return JSONResponse(
        error_body(info.code, info.message, **info.details),
        status_code=info.status_code,
        headers=info.headers or None,
    )


def install_error_handlers(app: FastAPI) -> None:
    """``/api``'s answers to errors: ``{"error": {"code", "message", "details"?}}``."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_json(describe_error(exc))

    for kind in (AppError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(kind, handle)
