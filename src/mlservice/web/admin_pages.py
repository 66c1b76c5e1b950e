"""The administrators' pages: users and balances, models and prices, request history, statistics.

Server-rendered over the services the admin API uses; forms post here and are answered with a
redirect and a notice (post/redirect/get), or with the form again when what was typed is invalid.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.admin import service as admin_service
from mlservice.admin.schemas import AdjustmentRequest
from mlservice.catalog import service as catalog
from mlservice.catalog.schemas import MAX_WAIT_MS, ModelUpdate
from mlservice.catalog.tables import CatalogModel
from mlservice.deps import MAX_OFFSET, ComponentsDep, SessionDep, SettingsDep, WriteSessionDep
from mlservice.errors import AppError
from mlservice.history import service as history
from mlservice.history import statistics
from mlservice.history.schemas import ModelStatistics, Statistics
from mlservice.users.tables import User
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import Wallet
from mlservice.web import admin_charts as charts
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import PageAdmin, PageWallet
from mlservice.web.render import page, redirect, safe_next

if TYPE_CHECKING:
    from mlservice.components import Components

router = APIRouter(prefix="/admin", include_in_schema=False)

CsrfField = Annotated[str | None, Form(alias="csrf_token")]
TextField = Annotated[str, Form()]

USERS_PER_PAGE = 25
HISTORY_PER_PAGE = 50
WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
WINDOW_NAMES = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom"}
STATUSES = [status.value for status in history.RequestStatus]


# -- formatting for the templates --------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
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
    "when": _when,
    "size": _size,
    "number": _optional(charts.number),
    "ms": _optional(charts.milliseconds),
    "pct": _optional(charts.percent),
}


def admin_page(
    request: Request,
    template: str,
    *,
    admin: User,
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


# -- reading what people typed ------------------------------------------------------------------------


class InputProblem(ValueError):
    """Something typed into a form or a filter that cannot be used; the message says why."""


def _whole_number(value: str, what: str) -> int:
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


def _users_back(value: str) -> str:
    """Where a user action returns to: the users list it was made from (search and page kept)."""
    target = safe_next(value)
    return target if target.startswith("/admin/users") else "/admin/users"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


# -- overview ---------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def overview(
    request: Request, admin: PageAdmin, wallet: PageWallet, session: SessionDep, components: ComponentsDep
) -> Response:
    accounts = await admin_service.list_accounts(session, search=None, limit=1, offset=0)
    models = await catalog.list_models(session, include_disabled=True)
    since, until = history.check_period(None, None, WINDOWS["24h"])
    day = await statistics.compute(session, components.predictors, since, until)
    return admin_page(
        request,
        "index.html",
        admin=admin,
        wallet=wallet,
        section="overview",
        users=accounts.total,
        models=models,
        enabled=sum(1 for m in models if m.enabled),
        day=day.overall,
    )


# -- users ------------------------------------------------------------------------------------------


@router.get("/users", response_class=HTMLResponse)
async def users(
    request: Request,
    admin: PageAdmin,
    wallet: PageWallet,
    session: SessionDep,
    search: str = "",
    offset: str = "0",
) -> Response:
    search = search.strip()[:320]
    try:
        start = min(max(int(offset), 0), MAX_OFFSET)
    except ValueError:
        start = 0
    found = await admin_service.list_accounts(session, search=search, limit=USERS_PER_PAGE, offset=start)

    def link(at: int) -> str:
        query = {k: v for k, v in (("search", search), ("offset", str(at) if at else "")) if v}
        return "/admin/users" + (f"?{urlencode(query)}" if query else "")

    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return admin_page(
        request,
        "users.html",
        admin=admin,
        wallet=wallet,
        section="users",
        accounts=found.items,
        total=found.total,
        search=search,
        first=start + 1,
        last=start + len(found.items),
        previous=link(max(start - USERS_PER_PAGE, 0)) if start > 0 else None,
        next=link(start + USERS_PER_PAGE) if start + USERS_PER_PAGE < found.total else None,
        here=here,
    )


async def _update_account(
    session: AsyncSession,
    admin: User,
    user_id: uuid.UUID,
    back: str,
    *,
    is_superuser: bool | None = None,
    is_active: bool | None = None,
) -> Response:
    target = _users_back(back) + f"#user-{user_id}"
    try:
        account = await admin_service.update_account(
            session, admin, user_id, is_superuser=is_superuser, is_active=is_active
        )
    except AppError as exc:
        await session.rollback()
        return redirect(target, error=exc.message)
    email = account.user.email
    if is_superuser is not None:
        done = (
            f"{email} is now an administrator." if is_superuser else f"{email} is no longer an administrator."
        )
    else:
        done = (
            f"{email} can sign in again."
            if is_active
            else f"{email} is deactivated and can no longer sign in."
        )
    return redirect(target, notice=done)


@router.post("/users/{user_id}/role")
async def change_role(
    request: Request,
    user_id: uuid.UUID,
    admin: PageAdmin,
    session: WriteSessionDep,
    admin_role: TextField = "",
    back: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    return await _update_account(session, admin, user_id, back, is_superuser=admin_role == "1")


@router.post("/users/{user_id}/active")
async def change_active(
    request: Request,
    user_id: uuid.UUID,
    admin: PageAdmin,
    session: WriteSessionDep,
    active: TextField = "",
    back: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    return await _update_account(session, admin, user_id, back, is_active=active == "1")


@router.post("/users/{user_id}/adjustments")
async def adjust_balance(
    request: Request,
    user_id: uuid.UUID,
    admin: PageAdmin,
    session: WriteSessionDep,
    amount: TextField = "",
    reason: TextField = "",
    back: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    target = _users_back(back) + f"#user-{user_id}"
    try:
        body = AdjustmentRequest(amount=_whole_number(amount, "The amount"), note=reason.strip())
    except InputProblem as exc:
        return redirect(target, error=f"{exc} Use a negative number, such as -20, to take credits away.")
    except ValidationError as exc:
        fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        problem = (
            "The amount must not be 0."
            if "amount" in fields
            else "Give a reason of at most 500 characters: it is kept in the ledger."
        )
        return redirect(target, error=problem)
    try:
        account = await admin_service.get_account(session, user_id)
        await wallet_service.adjust(session, user_id, body.amount, f"{body.note} (by {admin.email})")
        after = await wallet_service.get_wallet(session, user_id)
    except AppError as exc:
        await session.rollback()
        return redirect(target, error=f"The balance was not changed: {exc.message}")
    change = f"Added {body.amount:,}" if body.amount > 0 else f"Took {-body.amount:,}"
    return redirect(
        target,
        notice=f"{change} credits {'to' if body.amount > 0 else 'from'} {account.user.email}: "
        f"balance {after.balance:,}, available {after.available:,}.",
    )


# -- models -----------------------------------------------------------------------------------------


@dataclass
class ModelForm:
    """The edit form of one model: what it shows (the row, or what was typed) and what was wrong."""

    price: str
    enabled: bool
    max_batch_size: str
    max_wait_ms: str
    errors: dict[str, str]

    @classmethod
    def of(cls, model: CatalogModel) -> ModelForm:
        wait = "" if model.max_wait_ms is None else str(model.max_wait_ms)
        return cls(str(model.price), model.enabled, str(model.max_batch_size), wait, {})


_MODEL_FIELDS = {
    "price": "Price",
    "max_batch_size": "Max batch size",
    "max_wait_ms": "Max wait",
}


def _model_changes(model: CatalogModel, form: ModelForm) -> dict[str, Any]:
    """What the form changes, checked by the API's own schema; raises with the problems by field."""
    changes: dict[str, Any] = {}
    for name, label in _MODEL_FIELDS.items():
        typed = getattr(form, name).strip()
        if not typed:
            if name == "max_wait_ms" and model.max_wait_ms is None:
                continue
            form.errors[name] = f"{label}: enter a whole number."
            continue
        try:
            value = int(typed)
        except ValueError:
            form.errors[name] = f"{label}: enter a whole number, not {typed!r}."
            continue
        if value != getattr(model, name):
            changes[name] = value
    if form.enabled != model.enabled:
        changes["enabled"] = form.enabled
    if form.errors or not changes:
        return changes
    try:
        ModelUpdate(**changes)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "form"
            message = str(error["msg"]).replace("Input should be", "must be")
            form.errors[name] = f"{_MODEL_FIELDS.get(name, 'The form')}: {message}."
    return changes


async def _models_page(
    request: Request,
    admin: User,
    wallet: Wallet | None,
    session: AsyncSession,
    components: Components,
    forms: Mapping[str, ModelForm] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    models = await catalog.list_models(session, include_disabled=True)
    shown = {m.slug: (forms or {}).get(m.slug) or ModelForm.of(m) for m in models}
    limits = {
        m.slug: cls.max_batch_size if (cls := components.predictors.get(m.slug)) else None for m in models
    }
    return admin_page(
        request,
        "models.html",
        admin=admin,
        wallet=wallet,
        section="models",
        models=models,
        forms=shown,
        limits=limits,
        max_wait=MAX_WAIT_MS,
        status_code=status_code,
    )


@router.get("/models", response_class=HTMLResponse)
async def models(
    request: Request, admin: PageAdmin, wallet: PageWallet, session: SessionDep, components: ComponentsDep
) -> Response:
    return await _models_page(request, admin, wallet, session, components)


@router.post("/models/{slug}", response_class=HTMLResponse)
async def update_model(
    request: Request,
    slug: str,
    admin: PageAdmin,
    session: WriteSessionDep,
    components: ComponentsDep,
    price: TextField = "",
    enabled: TextField = "",
    max_batch_size: TextField = "",
    max_wait_ms: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    model = await catalog.get_model(session, slug)
    form = ModelForm(price, bool(enabled), max_batch_size, max_wait_ms, {})
    changes = _model_changes(model, form)
    if not form.errors:
        if not changes:
            return redirect(f"/admin/models#model-{slug}", notice=f"Nothing to change for {model.title}.")
        try:
            await catalog.update_model(
                session,
                slug,
                price=changes.get("price"),
                enabled=changes.get("enabled"),
                max_batch_size=changes.get("max_batch_size"),
                max_wait_ms=changes.get("max_wait_ms"),
                predictor=components.predictors.get(slug),
            )
        except (catalog.BatchSizeTooLarge, catalog.ModelNotInstalled) as exc:
            form.errors["max_batch_size"] = exc.message
        except AppError as exc:
            form.errors["form"] = exc.message
    if form.errors:
        await session.rollback()
        wallet = await wallet_service.get_wallet(session, admin.id)
        return await _models_page(request, admin, wallet, session, components, {slug: form}, 422)
    summary = ", ".join(_said(name, value) for name, value in changes.items())
    return redirect(f"/admin/models#model-{slug}", notice=f"Saved {model.title}: {summary}.")


def _said(name: str, value: Any) -> str:
    if name == "price":
        return f"price {value:,} credits"
    if name == "enabled":
        return "enabled" if value else "disabled"
    if name == "max_batch_size":
        return f"max batch size {value}"
    return f"max wait {value} ms"


# -- request history --------------------------------------------------------------------------------


@router.get("/history", response_class=HTMLResponse)
async def request_history(
    request: Request,
    admin: PageAdmin,
    wallet: PageWallet,
    session: SessionDep,
    components: ComponentsDep,
    email: str = "",
    model: str = "",
    status: str = "",
    since: str = "",
    until: str = "",
    cursor: str = "",
) -> Response:
    values = {"email": email, "model": model, "status": status, "since": since, "until": until}
    values = {k: v.strip()[:320] for k, v in values.items()}
    problems: list[str] = []
    try:
        chosen = history.RequestStatus(values["status"]) if values["status"] else None
    except ValueError:
        problems.append(f"Status: choose one of {', '.join(STATUSES)}.")
        chosen = None
    moments: dict[str, datetime | None] = {}
    for name, label in (("since", "From"), ("until", "To")):
        try:
            moments[name] = parse_moment(values[name], label, end_of_day=name == "until")
        except InputProblem as exc:
            problems.append(str(exc))
    items: Sequence[Any] = []
    next_link = None
    if not problems:
        filters = history.HistoryFilter(
            email=values["email"] or None,
            model=values["model"][:64] or None,
            status=chosen,
            since=moments.get("since"),
            until=moments.get("until"),
        )
        found = await history.list_requests(
            session, components.predictors, filters, limit=HISTORY_PER_PAGE, cursor=cursor or None
        )
        items = found.items
        if found.next_cursor:
            next_link = "/admin/history?" + urlencode(
                {**{k: v for k, v in values.items() if v}, "cursor": found.next_cursor}
            )
    filtered = {k: v for k, v in values.items() if v}
    return admin_page(
        request,
        "history.html",
        admin=admin,
        wallet=wallet,
        section="history",
        items=items,
        values=values,
        statuses=STATUSES,
        models=await catalog.list_models(session, include_disabled=True),
        problems=problems,
        paged=bool(cursor),
        first_link="/admin/history" + (f"?{urlencode(filtered)}" if filtered else ""),
        next_link=next_link,
        status_code=422 if problems else 200,
    )


def _delete_page(
    request: Request,
    admin: User,
    wallet: Wallet | None,
    before: datetime | None,
    before_text: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return admin_page(
        request,
        "history_delete.html",
        admin=admin,
        wallet=wallet,
        section="history",
        before=before,
        before_text=before_text,
        error=error,
        status_code=status_code,
    )


@router.get("/history/delete", response_class=HTMLResponse)
async def confirm_delete_history(
    request: Request, admin: PageAdmin, wallet: PageWallet, before: str = ""
) -> Response:
    """The confirmation step: what would be deleted, and the admin token that allows it."""
    try:
        moment = parse_moment(before, "Before")
    except InputProblem as exc:
        return redirect("/admin/history#delete", error=str(exc))
    return _delete_page(request, admin, wallet, moment, before.strip())


@router.post("/history/delete", response_class=HTMLResponse)
async def delete_history(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    session: WriteSessionDep,
    before: TextField = "",
    admin_token: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    try:
        moment = parse_moment(before, "Before")
    except InputProblem as exc:
        return redirect("/admin/history#delete", error=str(exc))
    try:
        # The same second factor as the API's X-Admin-Token header.
        admin_service.check_admin_token(settings.admin_token, admin_token)
    except admin_service.BadAdminToken:
        wallet = await wallet_service.get_wallet(session, admin.id)
        problem = "That is not the server's admin token; nothing was deleted."
        return _delete_page(request, admin, wallet, moment, before, error=problem, status_code=403)
    except admin_service.AdminTokenNotConfigured as exc:
        wallet = await wallet_service.get_wallet(session, admin.id)
        return _delete_page(request, admin, wallet, moment, before, error=exc.message, status_code=403)
    deleted = await history.delete_requests(session, before=moment)
    scope = f" that arrived before {_when(moment)} UTC" if moment else ""
    return redirect(
        "/admin/history", notice=f"Deleted {_plural(deleted, 'request')}{scope} from the history."
    )


# -- statistics -------------------------------------------------------------------------------------

REQUEST_SERIES = [
    charts.Series("ok", "Accepted"),
    charts.Series("failed", "Failed"),
    charts.Series("rejected", "Rejected"),
]
PERCENTILE_SERIES = [charts.Series("p50", "p50"), charts.Series("p95", "p95"), charts.Series("p99", "p99")]
RATE_SERIES = [charts.Series("failed", "Job error rate"), charts.Series("rejected", "Rejection rate")]
COUNT_SERIES = [charts.Series("ok", "Jobs")]


def _model_name(stats: ModelStatistics) -> str:
    return stats.model if stats.model is not None else "(no model named)"


def _bucket_label(bucket: statistics.TimeBucket, size: statistics.Bucket, first: bool) -> str:
    start = bucket.start
    if size is statistics.Bucket.day:
        return start.strftime("%d %b")
    return start.strftime("%d %b %H:%M" if first or start.hour == 0 else "%H:%M")


def _bucket_heading(bucket: statistics.TimeBucket, size: statistics.Bucket) -> str:
    if size is statistics.Bucket.day:
        return bucket.start.strftime("%Y-%m-%d (UTC)")
    end = bucket.start + timedelta(seconds=size.seconds)
    return f"{bucket.start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC"


def requests_chart(series: Sequence[statistics.TimeBucket], size: statistics.Bucket) -> charts.Chart:
    return charts.stacked_columns(
        [
            charts.Column(
                _bucket_label(b, size, i == 0),
                _bucket_heading(b, size),
                (b.accepted - b.failed, b.failed, b.rejected),
            )
            for i, b in enumerate(series)
        ],
        REQUEST_SERIES,
    )


def latency_chart(stats: Statistics, metric: str) -> charts.Chart:
    groups = []
    for model in stats.models:
        summary = getattr(model, metric)
        if summary.count:
            groups.append(charts.Group(_model_name(model), (summary.p50, summary.p95, summary.p99)))
    return charts.horizontal_bars(groups, PERCENTILE_SERIES, fmt=charts.milliseconds)


def rates_chart(stats: Statistics) -> charts.Chart:
    groups = [
        charts.Group(_model_name(m), (m.error_rate, m.rejection_rate)) for m in stats.models if m.requests
    ]
    return charts.horizontal_bars(groups, RATE_SERIES, fmt=charts.percent, maximum=1.0)


def predictions_charts(stats: Statistics) -> list[tuple[ModelStatistics, charts.Chart]]:
    return [
        (
            m,
            charts.horizontal_bars(
                [charts.Group(label, (count,)) for label, count in m.predictions.items()],
                COUNT_SERIES,
                bar_height=18,
            ),
        )
        for m in stats.models
        if m.predictions
    ]


def _period(window: str, since: str, until: str) -> tuple[datetime, datetime]:
    if window in WINDOWS:
        return history.check_period(None, None, WINDOWS[window])
    start = parse_moment(since, "From")
    end = parse_moment(until, "To", end_of_day=True)
    if start is None:
        raise InputProblem("From: enter the first day of the period.")
    return history.check_period(start, end, WINDOWS["24h"])


@router.get("/stats", response_class=HTMLResponse)
async def stats_page(
    request: Request,
    admin: PageAdmin,
    wallet: PageWallet,
    session: SessionDep,
    components: ComponentsDep,
    window: str = "24h",
    since: str = "",
    until: str = "",
) -> Response:
    window = window if window in WINDOW_NAMES else "24h"
    context: dict[str, Any] = {
        "window": window,
        "windows": WINDOW_NAMES,
        "since_text": since.strip()[:40],
        "until_text": until.strip()[:40],
        "problem": None,
        "stats": None,
    }
    try:
        start, end = _period(window, since, until)
        size = statistics.bucket_for(start, end)
        series = await statistics.requests_over_time(session, start, end, size)
    except (InputProblem, history.InvalidPeriod) as exc:
        context["problem"] = exc.message if isinstance(exc, AppError) else str(exc)
        return admin_page(
            request, "stats.html", admin=admin, wallet=wallet, section="stats", status_code=422, **context
        )
    found = await statistics.compute(session, components.predictors, start, end)
    context.update(
        stats=found,
        start=start,
        end=end,
        bucket=size,
        series=series,
        series_headings=[_bucket_heading(b, size) for b in series],
        requests_chart=requests_chart(series, size),
        processing_chart=latency_chart(found, "processing_ms"),
        queue_chart=latency_chart(found, "queue_ms"),
        rates_chart=rates_chart(found),
        predictions=predictions_charts(found),
        model_name=_model_name,
    )
    return admin_page(request, "stats.html", admin=admin, wallet=wallet, section="stats", **context)
