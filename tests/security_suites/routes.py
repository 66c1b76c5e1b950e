"""The app's routes as the security suites see them: discovered from the app itself, never listed
by hand, so a route added tomorrow is tested tomorrow (or the suite says what it is missing)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    # Names of every callable in the route's dependency tree (auth shows up here).
    dependencies: frozenset[str]
    operation: dict[str, Any] | None  # its OpenAPI operation; None when hidden from the schema

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(m.group(1) for m in _PARAM.finditer(self.path))

    @property
    def is_admin(self) -> bool:
        return self.path.startswith("/api/admin/") or "require_admin" in self.dependencies

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _route_contexts(app: FastAPI) -> Iterable[Any]:
    # Recent FastAPI versions keep included routers lazily (app.routes holds the routers, not their
    # routes); iter_route_contexts flattens them. Older versions have the flat list in app.routes.
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def _dependency_names(dependant: Any) -> Iterator[str]:
    for sub in getattr(dependant, "dependencies", []) or []:
        call = getattr(sub, "call", None)
        if call is not None:
            yield getattr(call, "__name__", type(call).__name__)
        yield from _dependency_names(sub)


def app_routes(app: FastAPI) -> list[Route]:
    """Every HTTP route of the app (one per method), with its OpenAPI operation."""
    paths: dict[str, Any] = app.openapi().get("paths", {})
    routes: list[Route] = []
    for context in _route_contexts(app):
        path = getattr(context, "path", None)
        methods = getattr(context, "methods", None)
        if not path or not methods:
            continue
        dependant = getattr(context, "dependant", None)
        names = frozenset(_dependency_names(dependant)) if dependant is not None else frozenset()
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            operation = paths.get(path, {}).get(method.lower())
            routes.append(Route(method, path, names, operation))
    return routes


def api_id_routes(app: FastAPI) -> list[Route]:
    """The routes under /api that take a path parameter (an id, a slug, a name)."""
    return [r for r in app_routes(app) if r.path.startswith("/api/") and r.params]


def api_write_routes(app: FastAPI) -> list[Route]:
    return [r for r in app_routes(app) if r.path.startswith("/api/") and r.is_write]


# --- A minimal valid instance of an OpenAPI request body, for routes no table knows yet. ---


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def minimal_instance(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The smallest value that the JSON schema accepts (required properties only)."""
    schema = _resolve(spec, schema)
    if schema.get("examples"):
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [_resolve(spec, s) for s in schema[key]]
            chosen = next((s for s in options if s.get("type") != "null"), options[0])
            return minimal_instance(spec, chosen)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(spec, part))
        return minimal_instance(spec, merged)
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: minimal_instance(spec, properties[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(spec, schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "email":
            return f"probe-{uuid.uuid4().hex[:8]}@example.com"
        if fmt == "uuid":
            return str(uuid.uuid4())
        if fmt == "binary":
            return "probe"
        return "probe" + "x" * max(0, schema.get("minLength", 1) - 5)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        return max(1, low)
    if kind == "boolean":
        return False
    return None


def request_body_example(spec: dict[str, Any], route: Route) -> tuple[str, Any] | None:
    """(media type, minimal body) from the route's OpenAPI request body, or None without a body."""
    if route.operation is None or "requestBody" not in route.operation:
        return None
    content = route.operation["requestBody"].get("content", {})
    for media_type in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data"):
        if media_type in content:
            return media_type, minimal_instance(spec, content[media_type].get("schema", {}))
    raise AssertionError(f"{route}: no JSON or form body in its OpenAPI request body: {sorted(content)}")
