"""The admin credits page: bonus grants (to a user or to everyone) and voiding them, promotion
codes, and refunding a job's charge (a form the users page shows too)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError

from mlservice.admin import service as admin_service
from mlservice.admin import usecases as admin_usecases
from mlservice.admin.schemas import GrantRequest, PromoCodeRequest, RefundRequest
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import AppError
from mlservice.wallet import grants
from mlservice.wallet import usecases as wallet_usecases
from mlservice.web.admin.formatting import admin_page
from mlservice.web.admin.inputs import CsrfField, InputProblem, TextField, parse_moment, whole_number
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import PageAdmin, PageWallet
from mlservice.web.render import redirect, safe_next

if TYPE_CHECKING:
    from datetime import datetime

router = APIRouter(prefix="/admin", include_in_schema=False)

RECENT_GRANTS = 50
PROMO_CODES = 50
PAGE = "/admin/credits"
EVERYONE = "everyone"

_LABELS = {
    "amount": "Credits",
    "note": "Note",
    "priority": "Priority",
    "code": "Code",
    "max_uses": "Uses",
    "grant_days": "Grant validity",
}


@router.get("/credits", response_class=HTMLResponse)
async def credits(request: Request, admin: PageAdmin, wallet: PageWallet, session: SessionDep) -> Response:
    return admin_page(
        request,
        "credits.html",
        admin=admin,
        wallet=wallet,
        section="credits",
        grants=await admin_service.recent_grants(session, RECENT_GRANTS),
        codes=await admin_service.promo_codes(session, PROMO_CODES),
        now=grants.now(),
        here=PAGE,
    )


def _problem(exc: ValidationError) -> str:
    """What was wrong, in the form's words (pydantic's message for the first field refused)."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    return f"{_LABELS.get(field, field.capitalize())}: {first['msg']}."


def _number(value: str, what: str) -> int | None:
    """A whole number typed into an optional field; empty: None."""
    return whole_number(value, what) if value.strip() else None


def _future(value: str, what: str) -> datetime | None:
    """An optional date (up to the end of that day, UTC) that must lie ahead."""
    moment = parse_moment(value, what, end_of_day=True)
    if moment is not None and moment <= grants.now():
        raise InputProblem(f"{what} must be in the future.")
    return moment


def _checked(model: type[BaseModel], **values: Any) -> Any:
    """``model`` of the typed values, or :class:`InputProblem` saying what is wrong."""
    try:
        return model(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise InputProblem(_problem(exc)) from None


@router.post("/credits/grants")
async def grant(
    request: Request,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    recipient: TextField = "",
    amount: TextField = "",
    expires: TextField = "",
    priority: TextField = "",
    note: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    to_everyone = recipient.strip().lower() == EVERYONE
    try:
        if not recipient.strip():
            raise InputProblem(f"Give the user's e-mail address, or “{EVERYONE}”.")
        body: GrantRequest = _checked(
            GrantRequest,
            amount=whole_number(amount, "Credits"),
            note=note.strip(),
            expires_at=_future(expires, "The expiry"),
            priority=_number(priority, "Priority"),
        )
        user_id = None if to_everyone else await admin_service.find_user_id(session, recipient)
        # No read connection held while the use case waits for the writer.
        await session.close()
        made = await wallet_usecases.grant_credits(
            components,
            admin,
            user_id,
            body.amount,
            body.note,
            expires_at=body.expires_at,
            priority=body.priority,
        )
    except (InputProblem, AppError) as exc:
        message = exc.message if isinstance(exc, AppError) else str(exc)
        return redirect(PAGE, error=f"Nothing was granted: {message}")
    whom = f"each of {made.count:,} accounts" if to_everyone else recipient.strip()
    return redirect(PAGE, notice=f"Granted {body.amount:,} bonus credits to {whom}.")


@router.post("/credits/grants/{grant_id}/void")
async def void(
    request: Request,
    grant_id: str,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    await session.close()
    try:
        number = int(grant_id)
        if not 1 <= number < 2**63:
            raise ValueError(grant_id)
        voided = await wallet_usecases.void_grant(components, admin, number)
    except ValueError:
        return redirect(PAGE, error="There is no such grant.")
    except AppError as exc:
        return redirect(PAGE, error=f"The grant was not voided: {exc.message}")
    return redirect(PAGE, notice=f"Grant {voided.id} voided: {voided.amount:,} credits taken back.")


@router.post("/credits/promo-codes")
async def create_promo_code(
    request: Request,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    code: TextField = "",
    amount: TextField = "",
    max_uses: TextField = "",
    redeem_until: TextField = "",
    grant_days: TextField = "",
    priority: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    await session.close()
    try:
        body: PromoCodeRequest = _checked(
            PromoCodeRequest,
            code=code.strip(),
            amount=whole_number(amount, "Credits"),
            max_uses=whole_number(max_uses, "Uses"),
            redeem_until=_future(redeem_until, "Redeem until"),
            grant_days=_number(grant_days, "Grant validity"),
            priority=_number(priority, "Priority"),
        )
        made = await wallet_usecases.create_promo_code(
            components,
            admin,
            body.code,
            body.amount,
            body.max_uses,
            redeem_until=body.redeem_until,
            grant_days=body.grant_days,
            priority=body.priority,
        )
    except (InputProblem, AppError) as exc:
        message = exc.message if isinstance(exc, AppError) else str(exc)
        return redirect(PAGE, error=f"The promotion code was not created: {message}")
    return redirect(
        PAGE,
        notice=f"Promotion code {made.code} created: {made.amount:,} credits, {made.max_uses:,} uses.",
    )


def _refund_back(value: str) -> str:
    """Where a refund returns to: the users list or the credits page it was made from."""
    target = safe_next(value)
    return target if target.startswith(("/admin/users", PAGE)) else PAGE


@router.post("/refunds")
async def refund(
    request: Request,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    job_id: TextField = "",
    note: TextField = "",
    back: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    await session.close()
    target = _refund_back(back)
    try:
        job = uuid.UUID(job_id.strip())
    except ValueError:
        return redirect(target, error="Nothing was refunded: give the job's id, as the history shows it.")
    try:
        body: RefundRequest = _checked(RefundRequest, note=note.strip() or None)
        done = await admin_usecases.refund_job(components, admin, job, body.note)
    except (InputProblem, AppError) as exc:
        message = exc.message if isinstance(exc, AppError) else str(exc)
        return redirect(target, error=f"Nothing was refunded: {message}")
    return redirect(
        target,
        notice=f"Refunded {done.entry.amount:,} credits of job {job}: "
        f"the owner's balance is {done.wallet.balance:,}, available {done.wallet.available:,}.",
    )
