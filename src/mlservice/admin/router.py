from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query

from mlservice.admin import service, usecases
from mlservice.admin.schemas import (
    AccountPage,
    AccountRead,
    AccountUpdate,
    AdjustmentRequest,
    AdjustmentResponse,
    GrantRequest,
    GrantsMade,
    PromoCodeRead,
    PromoCodeRequest,
    RefundRequest,
    RefundResponse,
)
from mlservice.deps import ComponentsDep, IsoDateTime, OffsetQuery, SessionDep, SettingsDep
from mlservice.errors import error_responses
from mlservice.history import service as history
from mlservice.history import statistics
from mlservice.history.schemas import HistoryDeleted, HistoryPage, Statistics
from mlservice.users.auth import AdminUser
from mlservice.users.principals import Principal
from mlservice.wallet import usecases as wallet
from mlservice.wallet.schemas import EntryRead, GrantRead, WalletRead

router = APIRouter(prefix="/admin", tags=["admin"])

STATISTICS_PERIOD = timedelta(hours=24)


async def require_admin_token(
    admin: AdminUser,
    settings: SettingsDep,
    token: Annotated[str | None, Header(alias="X-Admin-Token")] = None,
) -> Principal:
    """An administrator who also holds the server's admin token (destructive operations)."""
    service.check_admin_token(settings.admin_token, token)
    return admin


AdminWithToken = Annotated[Principal, Depends(require_admin_token)]


def _account(account: service.Account) -> AccountRead:
    user, balance, held = account.user, 0, 0
    if account.wallet is not None:
        balance, held = account.wallet.balance, account.wallet.held
    return AccountRead(
        id=user.id,
        email=user.email,
        role=user.role,
        is_superuser=user.is_superuser,
        is_active=user.is_active,
        is_verified=user.is_verified,
        created_at=user.created_at,
        balance=balance,
        held=held,
        available=balance - held,
    )


@router.get("/users", response_model=AccountPage)
async def list_users(
    _: AdminUser,
    session: SessionDep,
    search: Annotated[str | None, Query(max_length=320, description="Part of the e-mail address")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> AccountPage:
    """Accounts with their balances, oldest first."""
    page = await service.list_accounts(session, search=search, limit=limit, offset=offset)
    return AccountPage(items=[_account(a) for a in page.items], total=page.total, limit=limit, offset=offset)


@router.get("/users/{user_id}", response_model=AccountRead)
async def get_user(user_id: uuid.UUID, _: AdminUser, session: SessionDep) -> AccountRead:
    return _account(await service.get_account(session, user_id))


@router.patch("/users/{user_id}", response_model=AccountRead)
async def update_user(
    user_id: uuid.UUID, body: AccountUpdate, admin: AdminUser, components: ComponentsDep
) -> AccountRead:
    """Grant or take the admin role, deactivate or reactivate; not on your own account."""
    account = await usecases.update_account(
        components, admin, user_id, is_superuser=body.is_superuser, is_active=body.is_active
    )
    return _account(account)


@router.post("/users/{user_id}/adjustments", response_model=AdjustmentResponse)
async def adjust_balance(
    user_id: uuid.UUID,
    body: AdjustmentRequest,
    admin: AdminUser,
    components: ComponentsDep,
) -> AdjustmentResponse:
    """Correct a user's balance; the ledger keeps the amount, the note and who made it."""
    done = await wallet.adjust_balance(components, admin, user_id, body.amount, body.note)
    return AdjustmentResponse(
        wallet=WalletRead.model_validate(done.wallet), entry=EntryRead.model_validate(done.entry)
    )


@router.post("/grants", response_model=GrantsMade, status_code=201, responses=error_responses(404))
async def grant_credits(body: GrantRequest, admin: AdminUser, components: ComponentsDep) -> GrantsMade:
    """Grant bonus credits, with an optional expiry, to one user or (no ``user_id``) to everyone.

    To everyone, ``count`` is how many accounts got a grant and ``grants`` lists only the first 100
    of them (the answer would be huge otherwise). The wallets are granted in batches of 500, each
    committed on its own: should the server stop midway, the batches committed keep their grants
    and the rest get none (sending it again grants again to those already granted).
    """
    made = await wallet.grant_credits(
        components,
        admin,
        body.user_id,
        body.amount,
        body.note,
        expires_at=body.expires_at,
        priority=body.priority,
    )
    return GrantsMade(count=made.count, grants=[GrantRead.model_validate(g) for g in made.grants])


@router.post("/grants/{grant_id}/void", response_model=GrantRead, responses=error_responses(404, 409))
async def void_grant(
    grant_id: Annotated[int, Path(ge=1, le=2**63 - 1)], admin: AdminUser, components: ComponentsDep
) -> GrantRead:
    """Take back a grant none of which was spent or is held; it keeps who voided it."""
    return GrantRead.model_validate(await wallet.void_grant(components, admin, grant_id))


@router.post("/jobs/{job_id}/refund", response_model=RefundResponse, responses=error_responses(404, 409))
async def refund_job(
    job_id: uuid.UUID,
    admin: AdminUser,
    components: ComponentsDep,
    body: Annotated[RefundRequest | None, Body()] = None,
) -> RefundResponse:
    """Give a charged job's credits back to the grants they came from, once (``not_refundable``
    for a job never charged, failed, unfinished or refunded already); the ledger entry names the
    job, the administrator and the note."""
    done = await usecases.refund_job(components, admin, job_id, body.note if body else None)
    return RefundResponse(
        wallet=WalletRead.model_validate(done.wallet), entry=EntryRead.model_validate(done.entry)
    )


@router.post("/promo-codes", response_model=PromoCodeRead, status_code=201, responses=error_responses(409))
async def create_promo_code(
    body: PromoCodeRequest, admin: AdminUser, components: ComponentsDep
) -> PromoCodeRead:
    """A promotion code users redeem for bonus credits: total uses, one per user, an expiry."""
    made = await wallet.create_promo_code(
        components,
        admin,
        body.code,
        body.amount,
        body.max_uses,
        redeem_until=body.redeem_until,
        grant_days=body.grant_days,
        priority=body.priority,
    )
    return PromoCodeRead.model_validate(made)


@router.get("/history", response_model=HistoryPage)
async def list_history(
    _: AdminUser,
    session: SessionDep,
    components: ComponentsDep,
    user_id: uuid.UUID | None = None,
    email: Annotated[str | None, Query(max_length=320, description="The user's exact e-mail")] = None,
    model: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[
        history.RequestStatus | None,
        Query(description="The job's status, or `rejected` for refused requests"),
    ] = None,
    http_status: Annotated[int | None, Query(ge=100, le=599)] = None,
    since: Annotated[IsoDateTime | None, Query(description="Arrived at or after (UTC if no zone)")] = None,
    until: Annotated[IsoDateTime | None, Query(description="Arrived before (UTC if no zone)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the last page")] = None,
) -> HistoryPage:
    """Prediction requests, accepted and refused, newest first, with how their jobs went."""
    filters = history.HistoryFilter(
        user_id=user_id,
        email=email,
        model=model,
        status=status,
        http_status=http_status,
        since=since,
        until=until,
    )
    page = await history.list_requests(session, components.predictors, filters, limit=limit, cursor=cursor)
    return HistoryPage(items=page.items, limit=limit, next_cursor=page.next_cursor)


@router.delete("/history", response_model=HistoryDeleted)
async def delete_history(
    _: AdminWithToken,
    components: ComponentsDep,
    before: Annotated[IsoDateTime | None, Query(description="Only requests that arrived before this")] = None,
) -> HistoryDeleted:
    """Delete request history (all of it, or what is older than ``before``); needs X-Admin-Token.

    Jobs, results and the ledger are kept.
    """
    return HistoryDeleted(deleted=await usecases.delete_history(components, before=before))


@router.get("/stats", response_model=Statistics)
async def read_statistics(
    _: AdminUser,
    session: SessionDep,
    components: ComponentsDep,
    since: Annotated[IsoDateTime | None, Query(description="Default: 24 hours before `until`")] = None,
    until: Annotated[IsoDateTime | None, Query(description="Default: now")] = None,
) -> Statistics:
    """Per model and overall: requests, refusals, job outcomes, durations, inputs and answers."""
    start, end = history.check_period(since, until, STATISTICS_PERIOD)
    return await statistics.compute(session, components.predictors, start, end)
