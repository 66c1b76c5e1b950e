"""Form controls for a predictor's parameters, derived from its pydantic ``Params`` model.

The JSON Schema pydantic writes for the model is the source: a field's type picks the control
(number box, checkbox, choice, text), its default fills it, its bounds become the control's
``min``/``max``/``minlength``/``maxlength`` so the browser checks them before anything is sent, and
its description becomes the help text. The server validates again at submit (``parse_params``);
the form only saves a paid round trip on an obvious mistake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

ControlKind = Literal["integer", "number", "boolean", "choice", "text"]


@dataclass(frozen=True)
class ParamField:
    name: str
    label: str
    kind: ControlKind
    required: bool
    default: Any = None
    description: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    # Enum values as the schema has them (strings, numbers); the form sends them back as JSON.
    choices: list[Any] = field(default_factory=list)

    @property
    def input_id(self) -> str:
        return f"param-{self.name}"

    @property
    def step(self) -> str:
        return "1" if self.kind == "integer" else "any"

    @property
    def html_value(self) -> str:
        """The control's initial value as the ``value`` attribute takes it."""
        if self.default is None or self.kind == "boolean":
            return ""
        return str(self.default)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """One property's schema: a ``$ref`` followed, an ``Optional``'s non-null branch taken."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        concrete = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
        if len(concrete) == 1:
            return {**_resolve(concrete[0], root), **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _label(name: str, schema: dict[str, Any]) -> str:
    title = schema.get("title")
    # pydantic's automatic title is the name in Title Case; an explicit one reads better than ours.
    if isinstance(title, str) and title != name.replace("_", " ").title():
        return title
    return name.replace("_", " ").capitalize()


def _bound(schema: dict[str, Any], kind: ControlKind, lower: bool) -> int | float | None:
    inclusive = schema.get("minimum" if lower else "maximum")
    exclusive = schema.get("exclusiveMinimum" if lower else "exclusiveMaximum")
    if kind == "integer":
        if isinstance(inclusive, int | float):
            return math.ceil(inclusive) if lower else math.floor(inclusive)
        if isinstance(exclusive, int | float):
            # An integer's exclusive bound is the next integer inside it.
            return math.floor(exclusive) + 1 if lower else math.ceil(exclusive) - 1
        return None
    if isinstance(inclusive, int | float):
        return inclusive
    # A float's exclusive bound cannot be told to a browser: it stays as an inclusive one, and the
    # server refuses the edge itself.
    return exclusive if isinstance(exclusive, int | float) else None


_KINDS: dict[str, ControlKind] = {"integer": "integer", "number": "number", "boolean": "boolean"}


def _kind(schema: dict[str, Any]) -> ControlKind:
    if isinstance(schema.get("enum"), list):
        return "choice"
    return _KINDS.get(str(schema.get("type")), "text")


def param_fields(params_model: type[BaseModel]) -> list[ParamField]:
    """The controls for ``params_model``'s fields, in declaration order."""
    root = params_model.model_json_schema()
    required = set(root.get("required", []))
    fields = []
    for name, raw in root.get("properties", {}).items():
        schema = _resolve(raw, root)
        kind = _kind(schema)
        fields.append(
            ParamField(
                name=name,
                label=_label(name, schema),
                kind=kind,
                required=name in required,
                default=schema.get("default"),
                description=schema.get("description"),
                minimum=_bound(schema, kind, lower=True),
                maximum=_bound(schema, kind, lower=False),
                min_length=schema.get("minLength"),
                max_length=schema.get("maxLength"),
                choices=list(schema.get("enum", [])),
            )
        )
    return fields
