"""The frame of every admin page: ``admin_page``, and the formatters it hands each admin template."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from mlservice.users.principals import Principal
from mlservice.wallet.tables import Wallet
from mlservice.web import admin_charts as charts
from mlservice.web.render import page


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(count: int | None) -> str:
    if count is None:
        return ""
    if count < 1000:
        return f"{count} B"
    if count < 1_000_000:
        return f"{count / 1000:.1f} kB"
    return f"{count / 1_000_000:.1f} MB"


def _optional(fmt: charts.Format) -> Callable[[float | None], str]:
    def show(value: float | None) -> str:
        return "—" if value is None else fmt(value)

    return show


FORMATS: dict[str, Callable[..., str]] = {
    "when": when,
    "size": _size,
    "number": _optional(charts.number),
    "ms": _optional(charts.milliseconds),
    "pct": _optional(charts.percent),
}


def admin_page(
    request: Request,
    template: str,
    *,
    admin: Principal,
    wallet: Wallet | None,
    section: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    values: dict[str, Any] = {**FORMATS, **context}
    return page(
        request,
        f"admin/{template}",
        user=admin,
        wallet=wallet,
        nav="admin",
        status_code=status_code,
        section=section,
        **values,
    )
