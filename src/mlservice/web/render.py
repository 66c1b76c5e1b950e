"""Rendering pages: the template environment, the context every page gets, redirects with a notice."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from mlservice import __version__
from mlservice.users.principals import Principal
from mlservice.wallet.tables import Wallet
from mlservice.web.csrf import csrf_token, set_csrf_cookie

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
STATIC_DIR = HERE / "static"

FLASH_COOKIE = "mlservice_flash"


def _when(value: datetime | None) -> str:
    """A timestamp as pages show it (UTC; app.js rewrites ``<time data-local>`` in local time)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _signed(value: int) -> str:
    return f"+{value}" if value > 0 else ("\u2212" + str(-value) if value < 0 else "0")


def _duration(milliseconds: float | None) -> str:
    if milliseconds is None:
        return ""
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    return f"{milliseconds / 1000:.1f} s"


templates.env.filters.update(when=_when, signed=_signed, duration=_duration)


class LoginRequired(Exception):
    """Raised by page dependencies for visitors without a session: answered with a redirect."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def login_redirect(next_url: str) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(next_url, safe='/')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: only a path on this site (never //other.site or a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _flashes(request: Request) -> list[tuple[str, str]]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return []
    try:
        items = json.loads(base64.urlsafe_b64decode(raw.encode("ascii")))
        return [(str(kind), str(message)) for kind, message in items][:5]
    except (ValueError, TypeError, binascii.Error):
        return []


def page(
    request: Request,
    template: str,
    *,
    user: Principal | None,
    wallet: Wallet | None = None,
    nav: str = "",
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with what the layout needs (user, balance, CSRF token, notices)."""
    token = csrf_token(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "wallet": wallet,
            "nav": nav,
            "csrf_token": token,
            "flashes": _flashes(request),
            "version": __version__,
            **context,
        },
        status_code=status_code,
    )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")
    settings = request.app.state.components.settings
    set_csrf_cookie(request, response, secure=settings.cookie_secure)
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(url: str, *, notice: str | None = None, error: str | None = None) -> RedirectResponse:
    """303 to ``url`` (post/redirect/get), with a one-time notice shown by the next page."""
    response = RedirectResponse(url, status_code=303)
    items = [(kind, text) for kind, text in (("notice", notice), ("error", error)) if text]
    if items:
        value = base64.urlsafe_b64encode(json.dumps(items).encode()).decode("ascii")
        response.set_cookie(FLASH_COOKIE, value, httponly=True, samesite="lax", path="/", max_age=60)
    return response
