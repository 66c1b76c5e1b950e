"""``mlservice bot``: the Telegram bot's process, with the service's components of its own."""

from __future__ import annotations

import logging

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import BotCommand

from mlservice.bot.handlers import build_router
from mlservice.bot.notifier import ChatNotifier
from mlservice.components import Components, build_components, close_components, start_components
from mlservice.settings import Settings

log = logging.getLogger(__name__)

COMMANDS = [
    BotCommand(command="balance", description="your credits"),
    BotCommand(command="models", description="models and prices"),
    BotCommand(command="jobs", description="your recent jobs"),
    BotCommand(command="topup", description="add credits"),
    BotCommand(command="redeem", description="redeem a promotion code: /redeem CODE"),
    BotCommand(command="link", description="link this chat: /link CODE"),
    BotCommand(command="unlink", description="unlink this chat"),
    BotCommand(command="help", description="what this bot does"),
]


def create_bot(token: str, api_url: str = "") -> Bot:
    """The Bot API client; ``api_url`` points it at a custom Bot API server (or a test stand-in)."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url)) if api_url else AiohttpSession()
    return Bot(token, session=session)


def create_dispatcher(components: Components) -> Dispatcher:
    dispatcher = Dispatcher(components=components)
    dispatcher.include_router(build_router())
    return dispatcher


async def run_bot(settings: Settings) -> None:
    """Long polling until interrupted.

    With a broker (``MLSERVICE_BROKER_URL``) the bot only submits and waits for finish events, and
    ``mlservice worker`` processes run the jobs; on the embedded default it runs in-process workers
    like ``serve`` (``MLSERVICE_WORKERS``), so set ``MLSERVICE_WORKERS=0`` where the API process
    already runs them on the same database.
    """
    if settings.telegram_token is None:
        raise SystemExit("error: set MLSERVICE_TELEGRAM_TOKEN to run the bot")
    if settings.telegram_webhook_enabled():
        await register_webhook(settings)
        return
    components = build_components(settings)
    await start_components(components)
    bot = create_bot(settings.telegram_token.get_secret_value(), settings.telegram_api_url)
    # Messages the service has for linked chats (low-balance alerts) go out from here.
    notifier = ChatNotifier(components, bot)
    try:
        notifier.start()
        await bot.delete_webhook()  # long polling gets nothing while a webhook is set
        await bot.set_my_commands(COMMANDS)
        await create_dispatcher(components).start_polling(bot, handle_signals=False)
    finally:
        await notifier.stop()
        await bot.session.close()
        await close_components(components)


async def register_webhook(settings: Settings) -> None:
    """Point Telegram at the API's webhook route; the API process then runs the bot."""
    assert settings.telegram_token is not None
    assert settings.telegram_webhook_secret is not None
    bot = create_bot(settings.telegram_token.get_secret_value(), settings.telegram_api_url)
    try:
        await bot.set_webhook(
            settings.telegram_webhook_url, secret_token=settings.telegram_webhook_secret.get_secret_value()
        )
        await bot.set_my_commands(COMMANDS)
        log.info("telegram webhook set to %s", settings.telegram_webhook_url)
    finally:
        await bot.session.close()
