"""Logging in through an OpenID provider: the "Log in with ..." link starts it, the provider sends
the browser back to the callback, which signs the account in (see
:func:`~mlservice.users.usecases.finish_provider_login`).

The ``state`` goes both to the provider and into a short-lived cookie of this browser, and the
callback wants both to agree: an answer carried to another browser (login CSRF) is refused. A
refused login renders a page that says why, with the ways to log in that are still open.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlservice.deps import ComponentsDep
from mlservice.errors import AppError
from mlservice.security.limits import limit_provider_logins
from mlservice.users import usecases
from mlservice.users.transports import cookie_settings, set_session_cookie
from mlservice.web.render import page, redirect, safe_next

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

STATE_COOKIE = "mlservice_oidc_state"


def _state_cookie_path(provider: str) -> str:
    return f"/auth/oidc/{provider}/"


def callback_url(request: Request, provider: str) -> str:
    """The redirect URI to register at the provider: ``<site>/auth/oidc/<name>/callback``."""
    return str(request.url_for("oidc_callback", provider=provider))


def refused(request: Request, components: ComponentsDep, error: AppError, provider: str) -> Response:
    """The page of a login that cannot go on: why, its code, and the ways in that are left."""
    settings = components.settings
    # Operators see why logins fail (a provider down, a misconfigured client) without the users.
    log.info("login through OpenID provider %r refused: %s", provider, error.code)
    response = page(
        request,
        "oidc_error.html",
        user=None,
        nav="login",
        status_code=error.status_code,
        title="Login not completed",
        message=error.message,
        code=error.code,
        provider=provider,
        providers=components.oidc.buttons(),
        password_login=settings.password_login,
    )
    if provider in settings.oidc:  # a name from the URL goes into no header unless it is ours
        response.delete_cookie(STATE_COOKIE, path=_state_cookie_path(provider))
    return response


@router.get("/auth/oidc/{provider}/login", dependencies=[Depends(limit_provider_logins)])
async def oidc_login(
    request: Request, components: ComponentsDep, provider: str, next: str | None = None
) -> Response:
    """Send the browser to the provider's login page."""
    try:
        url, state = await usecases.begin_provider_login(
            components, provider, callback_url(request, provider), safe_next(next)
        )
    except AppError as exc:
        return refused(request, components, exc, provider)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=components.settings.oidc_login_seconds,
        path=_state_cookie_path(provider),
        httponly=True,
        secure=cookie_settings.secure,
        # Lax: the provider's redirect back is a top-level GET, which carries it.
        samesite="lax",
    )
    return response


@router.get("/auth/oidc/{provider}/callback", response_class=HTMLResponse, name="oidc_callback")
async def oidc_callback(
    request: Request,
    components: ComponentsDep,
    provider: str,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
    iss: str | None = None,
) -> Response:
    try:
        token, next_path = await usecases.finish_provider_login(
            components,
            provider,
            state=state,
            browser_state=request.cookies.get(STATE_COOKIE),
            code=code,
            error=error,
            issuer=iss,
            redirect_uri=callback_url(request, provider),
        )
    except AppError as exc:
        return refused(request, components, exc, provider)
    response = redirect(safe_next(next_path))
    set_session_cookie(response, token)
    response.delete_cookie(STATE_COOKIE, path=_state_cookie_path(provider))
    return response


async def end_session_url(request: Request, components: ComponentsDep, provider: str | None) -> str | None:
    """Where logging out continues: the provider's end-session page, when the session came from
    one that has it."""
    if provider is None:
        return None
    try:
        client = components.oidc.get(provider)
    except AppError:
        return None  # a provider no longer configured
    return await client.end_session_url(str(request.url_for("login_page")))
