"""The wallet page: credits by kind and their grants, the balance over time, transactions, monthly
statements, and its forms: a top-up, a promotion code, low-balance alerts, a Telegram link code.

Each form posts to a small route here, checked against the CSRF cookie, that calls the same use
case as the JSON API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from mlservice.chats import usecases as telegram_links
from mlservice.chats.service import IssuedCode
from mlservice.deps import ComponentsDep, SessionDep, SettingsDep
from mlservice.errors import AppError
from mlservice.wallet import alerts, breakdown, statements
from mlservice.wallet import service as wallet_service
from mlservice.wallet import usecases as wallet_usecases
from mlservice.wallet.alerts import AlertView
from mlservice.web import admin_charts as charts
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import PageUser
from mlservice.web.pages import PER_PAGE, CsrfField, PageNumber, _pager
from mlservice.web.render import page, redirect

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class AlertsForm:
    """The low-balance alerts form as shown: ``mode`` is default, own or off."""

    mode: str
    thresholds: str
    webhook_url: str
    telegram: bool

    @classmethod
    def of(cls, view: AlertView) -> AlertsForm:
        own = view.thresholds
        mode = "default" if own is None else "own" if own else "off"
        return cls(mode, ", ".join(str(t) for t in own or ()), view.webhook_url or "", view.telegram)

    def parsed(self) -> list[int] | None:
        """The thresholds the form asks for (None: the defaults); ValueError says what is wrong."""
        if self.mode == "default":
            return None
        if self.mode == "off":
            return []
        if self.mode != "own":
            raise ValueError("Choose default thresholds, your own, or no alerts.")
        parts = [p.strip() for p in self.thresholds.replace(";", ",").split(",") if p.strip()]
        if not parts or not all(p.isdigit() and 0 < int(p) <= MAX_THRESHOLD for p in parts):
            raise ValueError(
                f"Enter whole numbers of credits from 1 to {MAX_THRESHOLD}, separated by commas."
            )
        if len(set(parts)) > alerts.MAX_THRESHOLDS:
            raise ValueError(f"Up to {alerts.MAX_THRESHOLDS} thresholds.")
        return [int(p) for p in parts]


MAX_THRESHOLD = 10**12

DEFAULT_TOP_UP = 100
BALANCE_SERIES = (charts.Series("bonus", "Bonus"), charts.Series("paid", "Paid"))


def balance_chart(history: list[breakdown.DayBalance]) -> charts.Chart:
    """The balance at the end of each day, bonus and paid credits stacked."""
    columns = [
        charts.Column(f"{d.day:%b %d}", f"{d.day:%Y-%m-%d} (end of day, UTC)", (d.bonus, d.paid))
        for d in history
    ]
    return charts.stacked_columns(columns, BALANCE_SERIES)


async def _wallet_page(
    request: Request,
    user: PageUser,
    session: SessionDep,
    settings: SettingsDep,
    number: int,
    *,
    amount: int | str = DEFAULT_TOP_UP,
    error: str | None = None,
    telegram_code: IssuedCode | None = None,
    redeem_error: str | None = None,
    alerts_error: str | None = None,
    alerts_form: AlertsForm | None = None,
) -> Response:
    wallet = await wallet_service.get_wallet(session, user.id)
    # Credits by kind and the grants they are in (removing first whatever of them has expired).
    detail = await wallet_usecases.wallet_detail(request.app.state.components, user.id)
    pager = _pager(number)
    listing = await wallet_service.list_entries(session, user.id, PER_PAGE, pager.offset)
    months = await statements.statement_months(session, user.id)
    drawn = await breakdown.entry_grants(session, [entry.id for entry in listing.items])
    history = await breakdown.balance_history(session, user.id)
    alerts = await wallet_usecases.alert_settings(request.app.state.components, user.id)
    return page(
        request,
        "wallet.html",
        statement_months=months,
        entry_grants=drawn,
        balance_chart=balance_chart(history),
        detail=detail,
        redeem_error=redeem_error,
        alerts=alerts,
        alerts_form=alerts_form or AlertsForm.of(alerts),
        alerts_error=alerts_error,
        user=user,
        wallet=wallet,
        nav="wallet",
        entries=listing.items,
        pager=_pager(number, listing.total),
        max_top_up=settings.max_refill_amount,
        amount=amount,
        top_up_error=error,
        telegram_code=telegram_code,
        # One key per rendered form: submitting it twice (a double click, a resend) pays once.
        idempotency_key=uuid.uuid4().hex,
        status_code=400 if error or redeem_error or alerts_error else 200,
    )


@router.get("/wallet", response_class=HTMLResponse)
async def wallet_page(
    request: Request, user: PageUser, session: SessionDep, settings: SettingsDep, number: PageNumber = 1
) -> Response:
    return await _wallet_page(request, user, session, settings, number)


@router.post("/wallet/top-up", response_class=HTMLResponse)
async def top_up(
    request: Request,
    user: PageUser,
    session: SessionDep,
    components: ComponentsDep,
    amount: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
    csrf: CsrfField = None,
) -> Response:
    """A demo payment, as ``POST /api/wallet/refill`` (the same use case: same idempotency scope and
    fingerprint). The form's hidden key makes a double submit pay once."""
    check_csrf(request, csrf)
    settings = components.settings
    try:
        credits = int(amount.strip())
    except ValueError:
        credits = 0
    if not 0 < credits <= settings.max_refill_amount:
        message = f"Enter a whole number of credits from 1 to {settings.max_refill_amount}."
        return await _wallet_page(request, user, session, settings, 1, amount=amount[:20], error=message)
    # No read connection held while the use case waits for the writer.
    await session.close()
    outcome = await wallet_usecases.top_up(components, user.id, credits, idempotency_key.strip() or None)
    if outcome.replayed:
        return redirect("/wallet", notice="This top-up was already made; it was not charged twice.")
    return redirect("/wallet", notice=f"Added {credits} credits to your wallet.")


@router.post("/wallet/redeem", response_class=HTMLResponse)
async def redeem(
    request: Request,
    user: PageUser,
    session: SessionDep,
    components: ComponentsDep,
    code: Annotated[str, Form()] = "",
    csrf: CsrfField = None,
) -> Response:
    """A promotion code, as ``POST /api/wallet/redeem``: its bonus grant, once per user."""
    check_csrf(request, csrf)
    await session.close()
    try:
        _, made = await wallet_usecases.redeem_promo_code(components, user.id, code.strip())
    except AppError as exc:
        settings = components.settings
        return await _wallet_page(request, user, session, settings, 1, redeem_error=exc.message)
    until = f", until {made.expires_at:%Y-%m-%d}" if made.expires_at else ""
    return redirect("/wallet", notice=f"Added {made.amount} bonus credits{until}.")


@router.post("/wallet/telegram-code", response_class=HTMLResponse)
async def telegram_code(
    request: Request,
    user: PageUser,
    session: SessionDep,
    settings: SettingsDep,
    components: ComponentsDep,
    csrf: CsrfField = None,
) -> Response:
    """A one-time code to link a Telegram chat (``/link CODE``), shown once on the page."""
    check_csrf(request, csrf)
    # No read connection held while the use case waits for the writer; the page reads afresh.
    await session.close()
    issued = await telegram_links.create_link_code(components, user.id)
    return await _wallet_page(request, user, session, settings, 1, telegram_code=issued)


@router.post("/wallet/alerts", response_class=HTMLResponse)
async def set_alerts(
    request: Request,
    user: PageUser,
    session: SessionDep,
    components: ComponentsDep,
    mode: Annotated[str, Form()] = "default",
    thresholds: Annotated[str, Form()] = "",
    webhook_url: Annotated[str, Form()] = "",
    telegram: Annotated[str | None, Form()] = None,
    csrf: CsrfField = None,
) -> Response:
    """Low-balance alerts, as ``PUT /api/wallet/alerts``: thresholds, account webhook, Telegram."""
    check_csrf(request, csrf)
    form = AlertsForm(mode, thresholds[:200], webhook_url.strip()[:2000], telegram is not None)
    settings = components.settings
    try:
        chosen = form.parsed()
    except ValueError as exc:
        return await _wallet_page(
            request, user, session, settings, 1, alerts_error=str(exc), alerts_form=form
        )
    await session.close()
    try:
        await wallet_usecases.configure_alerts(
            components,
            user.id,
            thresholds=chosen,
            webhook_url=form.webhook_url or None,
            telegram=form.telegram,
        )
    except AppError as exc:
        return await _wallet_page(
            request, user, session, settings, 1, alerts_error=exc.message, alerts_form=form
        )
    return redirect("/wallet#alerts", notice="Your low-balance alerts are saved.")
