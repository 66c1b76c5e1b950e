"""Log output: ``console`` (readable lines, the default) or ``json`` (one object per line).

Structured fields travel as ordinary ``logging`` records: the ``extra=`` of a call and the fields
bound to the context (:func:`mlservice.observability.context.bind`). Any logger of any library
goes through the same formatter, so a line is never half structured.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from mlservice.observability.context import bound_fields

LogFormat = Literal["console", "json"]

# Attributes every LogRecord has; anything else on a record came from `extra=`. uvicorn adds a
# colored copy of its message that says nothing new.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context's bound fields, then the record's own (which win)."""
    fields = dict(bound_fields())
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, event, logger, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL logger: event key=value ...``, tracebacks below as usual."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record_fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={_console_value(value)}" for key, value in fields.items())


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def configure_logging(level: str, fmt: LogFormat, stream: IO[str] | None = None) -> None:
    """Send every logger's records to one handler on stderr, in ``fmt``; once, at process start."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
