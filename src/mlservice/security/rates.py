"""Rate limit values as written in the settings: ``"10/minute"``, ``"5/30s"``, ``"off"``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d*)\s*([a-z]+?)s?\s*$")
_OFF = {"", "off", "none", "0", "false", "disabled"}


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` requests per ``period_s`` seconds."""

    limit: int
    period_s: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_s < 1:
            raise ValueError("a rate needs a limit and a period of at least 1")

    def __str__(self) -> str:
        return f"{self.limit}/{self.period_s}s"


def parse_rate(value: str) -> Rate | None:
    """``"10/minute"``, ``"10 per minute"``, ``"100/hour"``, ``"5/30s"`` → a :class:`Rate`;
    ``"off"`` or an empty value → None (no limit)."""
    text = value.strip().lower()
    if text in _OFF:
        return None
    match = _RATE.match(text)
    unit = _UNITS.get(match.group(3)) if match else None
    if match is None or unit is None:
        raise ValueError(
            f"{value!r} is not a rate: write it as N/second, N/minute, N/hour, N/day or N/<seconds>s, "
            "or 'off'"
        )
    multiple = int(match.group(2)) if match.group(2) else 1
    return Rate(int(match.group(1)), multiple * unit)
