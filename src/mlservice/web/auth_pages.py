"""Register, log in and log out in the browser: forms that set and clear the session cookie."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlservice.deps import ComponentsDep
from mlservice.security.limits import limit_logins, limit_registrations
from mlservice.users import usecases
from mlservice.users.passwords import password_problem
from mlservice.users.schemas import UserCreate
from mlservice.users.transports import COOKIE_NAME, clear_session_cookie, set_session_cookie
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import OptionalUser
from mlservice.web.oidc_pages import end_session_url
from mlservice.web.render import page, redirect, safe_next

router = APIRouter(include_in_schema=False)


CsrfField = Annotated[str | None, Form(alias="csrf_token")]


def _ways_in(components: ComponentsDep) -> dict[str, Any]:
    """What the login and register pages offer: the password forms, the providers' buttons."""
    return {"password_login": components.settings.password_login, "providers": components.oidc.buttons()}


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request, user: OptionalUser, components: ComponentsDep, next: str | None = None
) -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(
        request, "login.html", user=None, nav="login", next=safe_next(next), email="", **_ways_in(components)
    )


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(limit_logins)])
async def login(
    request: Request,
    components: ComponentsDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    email = username.strip().lower()
    try:
        token = await usecases.log_in(components, email, password, browser=True)
    except (usecases.BadCredentials, usecases.PasswordLoginDisabled) as exc:
        return page(
            request,
            "login.html",
            user=None,
            nav="login",
            next=safe_next(next),
            email=email,
            error=exc.message,
            status_code=exc.status_code,
            **_ways_in(components),
        )
    response = redirect(safe_next(next))
    set_session_cookie(response, token)
    return response


@router.get("/register", response_class=HTMLResponse)
async def register_page(request: Request, user: OptionalUser, components: ComponentsDep) -> Response:
    if user is not None:
        return RedirectResponse("/", status_code=303)
    return page(request, "register.html", user=None, nav="register", email="", **_ways_in(components))


@router.post("/register", response_class=HTMLResponse, dependencies=[Depends(limit_registrations)])
async def register(
    request: Request,
    components: ComponentsDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    password_again: Annotated[str, Form()] = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    settings = components.settings
    email = email.strip().lower()

    def again(error: str, status_code: int = 400) -> Response:
        return page(
            request,
            "register.html",
            user=None,
            nav="register",
            email=email,
            error=error,
            status_code=status_code,
            **_ways_in(components),
        )

    if not settings.password_login:
        return again("Passwords are turned off here: log in through the identity provider.", 403)

    if password != password_again:
        return again("The two passwords differ.")
    problem = password_problem(password, email)
    if problem:
        return again(problem)
    try:
        body = UserCreate(email=email, password=password)
    except ValueError:
        return again("Enter a valid e-mail address.")
    try:
        user = await usecases.register(components.db, settings, body)
    except usecases.EmailTaken:
        return again("An account with this e-mail address already exists. Log in instead?")
    except (usecases.InvalidPassword, usecases.PasswordLoginDisabled) as exc:
        return again(exc.message, exc.status_code)
    token = await usecases.start_browser_session(components, user.id)
    response = redirect(
        "/", notice=f"Welcome! Your account starts with {settings.signup_bonus} free credits."
    )
    set_session_cookie(response, token)
    return response


@router.post("/logout")
async def logout(request: Request, components: ComponentsDep, csrf: CsrfField = None) -> Response:
    """End the session on the server, then forget the cookie; a session that came from an OpenID
    provider goes on to its end-session page (which sends the browser back to the login page)."""
    check_csrf(request, csrf)
    provider = await usecases.log_out(components, request.cookies.get(COOKIE_NAME))
    at_provider = await end_session_url(request, components, provider)
    response = redirect(at_provider or "/login", notice="You are logged out.")
    clear_session_cookie(response)
    return response
