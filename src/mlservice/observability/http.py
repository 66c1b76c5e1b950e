"""The HTTP side: a request id for every request, one log event and the metrics per request,
and ``GET /metrics``."""

from __future__ import annotations

import logging
from typing import Any

import fastapi.routing
from starlette.types import Scope

from mlservice.observability.context import RequestContext
from mlservice.observability.metrics import ServiceMetrics

log = logging.getLogger("mlservice.http")

REQUEST_ID_HEADER = "X-Request-ID"
# Any other method is counted as "other": a client cannot mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes and scrapes arrive every few seconds: their events only at debug level.
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})
UNMATCHED = "unmatched"


class RouteTemplates:
    """The full path template (``/api/jobs/{job_id}``) of the route that answered, never the raw path.

    The matched route object only knows its path inside its own router (``/{job_id}``) when FastAPI
    includes routers without flattening them; the app's route contexts know the prefixes. Built on
    first use and again whenever a route turns up that was added since.
    """

    def __init__(self) -> None:
        # id(route) -> (route, template); the route is kept so that its id is never reused.
        self._templates: dict[int, tuple[object, str]] = {}

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        known = self._templates.get(id(route))
        if known is None:
            self._templates = _templates(scope.get("app"))
            known = self._templates.get(id(route))
            if known is None:
                path = getattr(route, "path", None)
                known = (route, path if isinstance(path, str) and path else UNMATCHED)
                self._templates[id(route)] = known
        return known[1]


def _templates(app: Any) -> dict[int, tuple[object, str]]:
    routes = getattr(app, "routes", None) or []
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        # FastAPI releases that flatten included routers: every route has its full path.
        pairs = [(route, getattr(route, "path", None)) for route in routes]
    else:
        pairs = [(context.original_route, context.path) for context in iter_route_contexts(routes)]
    return {id(route): (route, path) for route, path in pairs if isinstance(path, str) and path}


class RequestLog:
    """Once a response is out: the request counted in the metrics and its ``http.request`` event
    logged (see :mod:`mlservice.edge`, which calls it)."""

    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        self.metrics = metrics
        self.route_template = RouteTemplates()
        # The labelled series, looked up once each: `labels()` costs a lock and a validation per
        # call, twice per request. Bounded: methods, route templates and statuses are few.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def _counter(self, method: str, route: str, status: int) -> Any:
        key = (method, route, status)
        series = self._counters.get(key)
        if series is None:
            assert self.metrics is not None
            series = self._counters[key] = self.metrics.http_requests.labels(method, route, str(status))
        return series

    def _histogram(self, method: str, route: str) -> Any:
        key = (method, route)
        series = self._histograms.get(key)
        if series is None:
            assert self.metrics is not None
            series = self._histograms[key] = self.metrics.http_duration.labels(method, route)
        return series

    def record(self, scope: Scope, context: RequestContext, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = self.route_template(scope)
        if self.metrics is not None:
            self._counter(method, route, status).inc()
            self._histogram(method, route).observe(seconds)
        if status >= 500 and status != 503:  # a 503 is an answer (an outage, logged once), not a bug
            level = logging.ERROR
        elif route in QUIET_ROUTES:
            level = logging.DEBUG
        else:
            level = logging.INFO
        if not log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "request_id": context.request_id,
        }
        if context.user_id is not None:
            fields["user_id"] = str(context.user_id)
        log.log(level, "http.request", extra=fields)
