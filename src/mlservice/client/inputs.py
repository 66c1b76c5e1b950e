"""What ``mlservice predict`` is given on its command line: ``text=…``, ``NAME=@file`` and
parameters as ``key=value``, read into a job's inputs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlservice.client.errors import EXIT_USAGE, ClientError

__all__ = ["Inputs", "parse_inputs", "parse_value"]


@dataclass
class Inputs:
    """A job's inputs as the API takes them: ``text``, one ``file``, and ``params``."""

    text: str | None = None
    file: tuple[str, bytes] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def parse_value(raw: str) -> Any:
    """A parameter's value: a number, true/false/null, a JSON list or object, or else the string."""
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    if raw.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}", exit_code=EXIT_USAGE) from None


def parse_inputs(pairs: list[str]) -> Inputs:
    """``text=...`` is the text; ``NAME=@path`` uploads the file (``text=@path`` reads the text
    from it); every other ``key=value`` is a parameter."""
    inputs = Inputs()
    for pair in pairs:
        key, separator, value = pair.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ClientError(
                f"{pair!r} is not key=value (e.g. top_k=3, image=@cat.jpg)", exit_code=EXIT_USAGE
            )
        if key == "text":
            if value.startswith("@"):
                try:
                    value = _read(Path(value[1:]).expanduser()).decode("utf-8")
                except UnicodeDecodeError:
                    raise ClientError(f"{value[1:]} is not UTF-8 text", exit_code=EXIT_USAGE) from None
            inputs.text = value
        elif value.startswith("@"):
            if inputs.file is not None:
                raise ClientError("a job takes one file", exit_code=EXIT_USAGE)
            path = Path(value[1:]).expanduser()
            inputs.file = (path.name, _read(path))
        else:
            inputs.params[key] = parse_value(value)
    return inputs
