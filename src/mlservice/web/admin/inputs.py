"""Reading what administrators type into the admin forms and filters: form fields, numbers, dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import Form

from mlservice.history import service as history

CsrfField = Annotated[str | None, Form(alias="csrf_token")]
TextField = Annotated[str, Form()]


class InputProblem(ValueError):
    """Something typed into a form or a filter that cannot be used; the message says why."""


def whole_number(value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InputProblem(f"{what} must be a whole number.") from None


def parse_moment(value: str, what: str, *, end_of_day: bool = False) -> datetime | None:
    """A date (``2026-05-01``) or date and time in UTC; empty: None.

    ``end_of_day``: a bare date means up to the end of that day (a "to" date includes its day).
    """
    value = value.strip()
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time(), UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        return history.as_utc(datetime.fromisoformat(value.replace(" ", "T")))
    except (ValueError, OverflowError, history.InvalidPeriod):
        raise InputProblem(f"{what}: enter a date as YYYY-MM-DD.") from None
