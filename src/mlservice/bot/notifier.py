"""Sending the chats' outbox (:mod:`mlservice.chats.messages`) from the process that runs the bot.

A loop claims due messages every few seconds and sends each with the bot; Telegram's flood limit
(429 with ``retry_after``), its server errors and network failures are retried on a schedule, a chat
that blocked the bot or no longer exists is given up at once. A message is sent at least once: a
process that dies between Telegram's answer and the record sends it again after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from mlservice.chats import usecases as chats
from mlservice.chats.messages import Outgoing
from mlservice.errors import ServiceUnavailable
from mlservice.types import utcnow

if TYPE_CHECKING:
    from mlservice.components import Components

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 2.0
# Seconds before the next attempt after each failed one; past the last one it is given up.
RETRY_DELAYS_S = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
BATCH = 20
LEASE = timedelta(seconds=60)


class ChatNotifier:
    def __init__(self, components: Components, bot: Bot, *, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.components = components
        self.bot = bot
        self.poll_interval_s = poll_interval_s
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._run_forever(), name="chat-notifier")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _run_forever(self) -> None:
        while True:
            try:
                while await self.dispatch() == BATCH:
                    pass
            except ServiceUnavailable:
                pass  # the database is away (logged once, by the database); the next poll retries
            except Exception:
                log.warning("could not send chat messages", exc_info=True)
            await asyncio.sleep(self.poll_interval_s)

    async def dispatch(self) -> int:
        """Send what is due now (one batch); how many were claimed."""
        claimed = await chats.claim_messages(self.components, LEASE, BATCH)
        for message in claimed:
            await self.send(message)
        return len(claimed)

    async def send(self, message: Outgoing) -> None:
        try:
            await self.bot.send_message(message.chat_id, message.text)
        except TelegramRetryAfter as exc:
            await self._retry(message, f"flood limit: {exc.message}", at_least_s=float(exc.retry_after))
        except (TelegramForbiddenError, TelegramBadRequest) as exc:
            log.info("chat message %s given up: %s", message.id, exc.message)
            await chats.record_message(self.components, message, sent=False, error=exc.message)
        except (TelegramServerError, TelegramNetworkError, TelegramAPIError, OSError, TimeoutError) as exc:
            await self._retry(message, f"{type(exc).__name__}: {exc}")
        else:
            await chats.record_message(self.components, message, sent=True)

    async def _retry(self, message: Outgoing, error: str, at_least_s: float = 0.0) -> None:
        if message.attempts > len(RETRY_DELAYS_S):
            log.warning("chat message %s given up after %d attempts: %s", message.id, message.attempts, error)
            await chats.record_message(self.components, message, sent=False, error=error)
            return
        delay = max(RETRY_DELAYS_S[message.attempts - 1], at_least_s)
        await chats.record_message(
            self.components, message, sent=False, retry_at=utcnow() + timedelta(seconds=delay), error=error
        )
