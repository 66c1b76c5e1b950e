"""What the code running right now is doing on whose behalf: the HTTP request, the job, the user.

Two context variables: the current request (set by the HTTP middleware, mutable so that a dependency
deep in the call can note the user) and the log fields bound by :func:`bind` (request id, job id,
model), which every log record written in that context carries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlservice.observability.metrics import ServiceMetrics

# What a client (or the proxy in front) may send as X-Request-ID: anything else is replaced, so a
# header can never smuggle newlines or markup into logs.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def valid_request_id(value: str | None) -> str | None:
    return value if value is not None and REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class RequestContext:
    request_id: str
    # The metrics of the app serving the request: services count what they did through it.
    metrics: ServiceMetrics | None = None
    user_id: uuid.UUID | None = None


_request: ContextVar[RequestContext | None] = ContextVar("mlservice_request", default=None)
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_fields: ContextVar[Mapping[str, Any]] = ContextVar("mlservice_log_fields", default=_NO_FIELDS)


def current_request() -> RequestContext | None:
    return _request.get()


def current_request_id() -> str | None:
    request = _request.get()
    return request.request_id if request is not None else None


def note_user(user_id: uuid.UUID) -> None:
    """Record the authenticated user of the current request (for its log event)."""
    request = _request.get()
    if request is not None:
        request.user_id = user_id


@contextmanager
def request_scope(request: RequestContext) -> Iterator[RequestContext]:
    token = _request.set(request)
    try:
        with bind(request_id=request.request_id):
            yield request
    finally:
        _request.reset(token)


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log record written inside the block (in this task and its threads)."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def bound_fields() -> Mapping[str, Any]:
    return _fields.get()
