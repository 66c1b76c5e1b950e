from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from mlservice.deps import ComponentsDep, OffsetQuery, SessionDep
from mlservice.errors import error_responses
from mlservice.users.auth import CurrentUser
from mlservice.wallet import service, statements, usecases
from mlservice.wallet.alerts import AlertView
from mlservice.wallet.schemas import (
    AlertRequest,
    AlertSettingsRead,
    BalanceAlertRead,
    EntryPage,
    EntryRead,
    GrantRead,
    RedeemRequest,
    RedeemResponse,
    RefillRequest,
    RefillResponse,
    WalletDetail,
    WalletRead,
)
from mlservice.webhooks.schemas import WebhookDeliveryRead

router = APIRouter(prefix="/wallet", tags=["wallet"], responses=error_responses(401))

IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.get("", response_model=WalletDetail)
async def read_wallet(user: CurrentUser, components: ComponentsDep) -> WalletDetail:
    """The totals (balance, held, available), credits by kind, what expires soon, and the grants."""
    return await usecases.wallet_detail(components, user.id)


@router.post("/refill", response_model=RefillResponse, responses=error_responses(400))
async def refill(
    body: RefillRequest,
    user: CurrentUser,
    components: ComponentsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Add credits (a demo payment: no money moves)."""
    outcome = await usecases.top_up(components, user.id, body.amount, idempotency_key)
    return JSONResponse(outcome.body, outcome.status_code, headers=outcome.headers())


@router.post("/redeem", response_model=RedeemResponse, responses=error_responses(400, 404, 409))
async def redeem(body: RedeemRequest, user: CurrentUser, components: ComponentsDep) -> RedeemResponse:
    """Redeem a promotion code for a bonus grant (once per user)."""
    wallet, made = await usecases.redeem_promo_code(components, user.id, body.code)
    return RedeemResponse(wallet=WalletRead.model_validate(wallet), grant=GrantRead.model_validate(made))


@router.get("/alerts", response_model=AlertSettingsRead)
async def read_alerts(user: CurrentUser, components: ComponentsDep) -> AlertSettingsRead:
    """Low-balance alerts: your thresholds (or the defaults), where they are sent, the latest ones."""
    return _alerts(await usecases.alert_settings(components, user.id))


@router.put("/alerts", response_model=AlertSettingsRead, responses=error_responses(400, 422))
async def set_alerts(body: AlertRequest, user: CurrentUser, components: ComponentsDep) -> AlertSettingsRead:
    """Set the thresholds (null: the cheapest model's price and 10 % of the last top-up), the
    account webhook for `balance.low` events and Telegram messages. Each threshold is announced
    once per crossing: again only after credits came in and lifted you back above it."""
    view = await usecases.configure_alerts(
        components, user.id, thresholds=body.thresholds, webhook_url=body.webhook_url, telegram=body.telegram
    )
    return _alerts(view)


def _alerts(view: AlertView) -> AlertSettingsRead:
    return AlertSettingsRead(
        thresholds=view.thresholds,
        effective=view.effective,
        below=view.below,
        webhook_url=view.webhook_url,
        telegram=view.telegram,
        recent=[BalanceAlertRead.model_validate(a) for a in view.recent],
        deliveries=[WebhookDeliveryRead.of(d) for d in view.deliveries],
    )


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


@router.get(
    "/statement",
    responses={
        200: {
            "description": "The statement as JSON, or CSV with `?format=csv`",
            "content": {"application/json": {}, "text/csv": {}},
        },
        **error_responses(400),
    },
    response_class=Response,
)
async def monthly_statement(
    user: CurrentUser,
    session: SessionDep,
    month: Annotated[
        str | None, Query(description="`YYYY-MM` (UTC); the current month (until now) when left out")
    ] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
) -> Response:
    """The statement of a calendar month (UTC; the current one until now): opening
    balance, credits by kind (top-ups, bonus credits, refunds, adjustments, expired, voided), charges
    per model, closing balance and what was held at the end. Its totals are the ledger's."""
    statement = await statements.monthly_statement(session, user.id, month or statements.current_month())
    if format == "csv":
        name = f"mlservice-statement-{statement.month}.csv"
        return Response(
            statement.as_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return JSONResponse(statement.as_json())
