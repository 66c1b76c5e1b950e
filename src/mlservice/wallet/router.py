from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from mlservice.deps import OffsetQuery, SessionDep, SettingsDep, WriteSessionDep
from mlservice.errors import AppError, error_responses
from mlservice.idempotency import service as idempotency
from mlservice.users.auth import CurrentUser
from mlservice.wallet import service
from mlservice.wallet.schemas import EntryPage, EntryRead, RefillRequest, RefillResponse, WalletRead

router = APIRouter(prefix="/wallet", tags=["wallet"], responses=error_responses(401))

IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.get("", response_model=WalletRead)
async def read_wallet(user: CurrentUser, session: SessionDep) -> WalletRead:
    return WalletRead.model_validate(await service.get_wallet(session, user.id))


@router.post("/refill", response_model=RefillResponse, responses=error_responses(400))
async def refill(
    body: RefillRequest,
    user: CurrentUser,
    session: WriteSessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Add credits (a demo payment: no money moves)."""
    if body.amount > settings.max_refill_amount:
        raise AppError(
            f"A single top-up is limited to {settings.max_refill_amount} credits.",
            code="refill_limit_exceeded",
            status_code=422,
        )

    async def operation() -> tuple[int, dict[str, Any]]:
        entry = await service.top_up(session, user.id, body.amount)
        wallet = await service.get_wallet(session, user.id)
        result = RefillResponse(
            wallet=WalletRead.model_validate(wallet), entry=EntryRead.model_validate(entry)
        )
        return 200, result.model_dump(mode="json")

    fingerprint = idempotency.request_fingerprint(amount=body.amount)
    outcome = await idempotency.run_once(
        session, user.id, "wallet.refill", idempotency_key, fingerprint, operation
    )
    return JSONResponse(outcome.body, outcome.status_code, headers=outcome.headers())


@router.get("/transactions", response_model=EntryPage)
async def transactions(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> EntryPage:
    """Ledger entries, newest first."""
    page = await service.list_entries(session, user.id, limit, offset)
    return EntryPage(
        items=[EntryRead.model_validate(e) for e in page.items], total=page.total, limit=limit, offset=offset
    )
