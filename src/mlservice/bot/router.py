from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel

from mlservice.chats import usecases
from mlservice.deps import ComponentsDep
from mlservice.errors import error_responses
from mlservice.users.auth import CurrentUser

router = APIRouter(prefix="/telegram", tags=["telegram"], responses=error_responses(401))


class LinkCodeRead(BaseModel):
    code: str
    expires_at: datetime


@router.post("/link-code", response_model=LinkCodeRead, status_code=status.HTTP_201_CREATED)
async def create_link_code(user: CurrentUser, components: ComponentsDep) -> LinkCodeRead:
    """A one-time code, valid 10 minutes: send `/link CODE` to the bot to link a Telegram chat."""
    issued = await usecases.create_link_code(components, user.id)
    return LinkCodeRead(code=issued.code, expires_at=issued.expires_at)
