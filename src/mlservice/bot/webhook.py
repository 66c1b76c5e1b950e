"""Updates pushed by Telegram to the API process (``MLSERVICE_TELEGRAM_WEBHOOK_URL``).

The route answers at once and handles the update in a task of its own: a job's result can take
longer than Telegram waits for an answer, and an unanswered update would be sent again.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from fastapi import APIRouter, Body, Header, Request, Response, status

from mlservice.bot.notifier import ChatNotifier
from mlservice.errors import Forbidden, NotFound

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"

router = APIRouter(include_in_schema=False)


@dataclass
class TelegramWebhook:
    """The bot in the API process: fed by the route below, and sending the chats' outbox."""

    bot: Bot
    dispatcher: Dispatcher
    secret: str
    notifier: ChatNotifier | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def start(self) -> None:
        if self.notifier is not None:
            self.notifier.start()

    def handle(self, update: Update) -> None:
        task = asyncio.create_task(self._feed(update))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _feed(self, update: Update) -> None:
        try:
            await self.dispatcher.feed_update(self.bot, update)
        except Exception:
            log.exception("telegram update %s failed", update.update_id)

    async def close(self) -> None:
        if self.notifier is not None:
            await self.notifier.stop()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.bot.session.close()


@router.post(WEBHOOK_PATH, status_code=status.HTTP_204_NO_CONTENT)
async def telegram_update(
    request: Request,
    body: Annotated[dict[str, Any], Body()],
    secret: Annotated[str, Header(alias="X-Telegram-Bot-Api-Secret-Token")] = "",
) -> Response:
    hook: TelegramWebhook | None = getattr(request.app.state, "telegram", None)
    if hook is None:
        raise NotFound("The Telegram webhook is not enabled.")
    if not hmac.compare_digest(secret.encode(), hook.secret.encode()):
        raise Forbidden("Wrong Telegram secret token.", code="telegram_secret_invalid")
    hook.handle(Update.model_validate(body, context={"bot": hook.bot}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
