from __future__ import annotations

import uuid

from fastapi import APIRouter

from mlservice.admin.schemas import AdjustmentRequest, AdjustmentResponse
from mlservice.deps import WriteSessionDep
from mlservice.users.auth import AdminUser
from mlservice.wallet import service as wallet
from mlservice.wallet.schemas import EntryRead, WalletRead

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/users/{user_id}/adjustments", response_model=AdjustmentResponse)
async def adjust_balance(
    user_id: uuid.UUID, body: AdjustmentRequest, admin: AdminUser, session: WriteSessionDep
) -> AdjustmentResponse:
    """Correct a user's balance; the ledger keeps the amount, the note and who made it."""
    entry = await wallet.adjust(session, user_id, body.amount, f"{body.note} (by {admin.email})")
    account = await wallet.get_wallet(session, user_id)
    return AdjustmentResponse(
        wallet=WalletRead.model_validate(account), entry=EntryRead.model_validate(entry)
    )
