"""The bot's handlers: every one calls the service layer with the components it is given.

A chat acts for the account it is linked to (``/link CODE``); an unlinked chat can read the help
and link itself, nothing else. Inputs (a photo, a document, a text) get an inline keyboard of the
models that take them, each button with its price, so nothing is charged before the user chooses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from typing import TYPE_CHECKING, Any

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, CommandStart, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from mlservice.bot.jobs import ChatInput, follow_job, submit_model
from mlservice.bot.replies import (
    button_title,
    describe_output,
    sent_artifacts,
    status_text,
    unfinished_outcome,
)
from mlservice.catalog.tables import CatalogModel
from mlservice.catalog.usecases import runnable_models
from mlservice.chats import usecases as chats
from mlservice.chats.service import LinkCodeExpired, LinkCodeInvalid
from mlservice.errors import AppError, describe_error
from mlservice.jobs import usecases as jobs
from mlservice.jobs.errors import FileTooLarge
from mlservice.jobs.tables import Job, JobStatus
from mlservice.predictors.base import InputKind
from mlservice.wallet import usecases as wallet

if TYPE_CHECKING:
    from mlservice.components import Components

log = logging.getLogger(__name__)

ENROLL_SLUG = "face-enroll"
RUN_PREFIX = "run:"
ENROLL_DATA = "enroll"
MAX_LABEL_LENGTH = 100

HELP = (
    "This bot runs mlservice models for your account.\n\n"
    "/link CODE: link this chat (get the code on your profile page)\n"
    "/unlink: unlink this chat\n"
    "/balance: your credits\n"
    "/models: the models and their prices\n"
    "/jobs: your recent jobs\n"
    "/topup AMOUNT: add credits\n"
    "/redeem CODE: redeem a promotion code\n\n"
    "Send a photo to classify it, remove its background, or identify or enroll faces; "
    "a document to scan it for malware; a text to get movie recommendations. "
    "Each button shows what it costs; you pay only for jobs that succeed."
)
NOT_LINKED = "This chat is not linked to an account. Get a code on your profile page and send /link CODE."


class Enroll(StatesGroup):
    waiting_for_label = State()


def credits(amount: int) -> str:
    return f"{amount} credit" if amount == 1 else f"{amount} credits"


async def require_user(components: Components, message: Message) -> uuid.UUID | None:
    user_id = await chats.chat_user(components, message.chat.id)
    if user_id is None:
        await message.answer(NOT_LINKED)
    return user_id


def task_of(components: Components, slug: str) -> str:
    cls = components.predictors.get(slug)
    return cls.task if cls is not None else ""


def models_keyboard(components: Components, models: list[CatalogModel]) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for model in models:
        title = button_title(task_of(components, model.slug), model.title)
        data = ENROLL_DATA if model.slug == ENROLL_SLUG else f"{RUN_PREFIX}{model.slug}"
        builder.button(text=f"{title} — {credits(model.price)}", callback_data=data)
    builder.adjust(1)
    return builder.as_markup()


# -- commands ---------------------------------------------------------------------------------------


async def help_command(message: Message) -> None:
    await message.answer(HELP)


async def link_command(message: Message, command: CommandObject, components: Components) -> None:
    if not command.args:
        await message.answer("Send /link CODE with the code from your profile page.")
        return
    try:
        linked = await chats.link_chat(components, message.chat.id, command.args)
    except (LinkCodeInvalid, LinkCodeExpired) as exc:
        await message.answer(describe_error(exc).message)
        return
    email = linked.email or "your account"
    await message.answer(f"This chat is now linked to {email}. Send /help to see what it can do.")


async def unlink_command(message: Message, components: Components) -> None:
    removed = await chats.unlink_chat(components, message.chat.id)
    await message.answer("This chat is unlinked." if removed else "This chat was not linked.")


async def balance_command(message: Message, components: Components) -> None:
    if (user_id := await require_user(components, message)) is None:
        return
    detail = await wallet.wallet_detail(components, user_id)
    text = f"Balance: {credits(detail.balance)}."
    if detail.held:
        text += f" {credits(detail.held)} held for running jobs; {detail.available} available."
    text += f"\nAvailable: {detail.paid} paid, {detail.bonus} bonus."
    if detail.expiring:
        text += f" {credits(detail.expiring)} expire within 7 days."
    await message.answer(text)


async def redeem_command(message: Message, command: CommandObject, components: Components) -> None:
    if (user_id := await require_user(components, message)) is None:
        return
    code = (command.args or "").strip()
    if not code:
        await message.answer("Send /redeem CODE to redeem a promotion code for bonus credits.")
        return
    try:
        account, made = await wallet.redeem_promo_code(components, user_id, code)
    except AppError as exc:
        await message.answer(describe_error(exc).message)
        return
    until = f" (they expire on {made.expires_at:%Y-%m-%d})" if made.expires_at else ""
    await message.answer(
        f"Added {credits(made.amount)} of bonus{until}. Balance: {credits(account.balance)}."
    )


async def models_command(message: Message, components: Components) -> None:
    if await require_user(components, message) is None:
        return
    models = await runnable_models(components)
    if not models:
        await message.answer("No models are available right now.")
        return
    lines = [f"{m.title} ({m.slug}): {credits(m.price)}" for m in models]
    await message.answer("Models and prices:\n" + "\n".join(lines))


async def jobs_command(message: Message, components: Components) -> None:
    if (user_id := await require_user(components, message)) is None:
        return
    page = await jobs.list_jobs(components, user_id, limit=10)
    if not page.items:
        await message.answer("You have no jobs yet.")
        return
    lines = [
        f"{job.created_at:%Y-%m-%d %H:%M} {job.model_slug}: {job.status} ({credits(job.cost)})"
        for job in page.items
    ]
    await message.answer(f"Your latest jobs ({page.total} in all):\n" + "\n".join(lines))


async def topup_command(message: Message, command: CommandObject, components: Components) -> None:
    if (user_id := await require_user(components, message)) is None:
        return
    limit = components.settings.max_refill_amount
    args = (command.args or "").strip()
    if not args.isdigit() or int(args) <= 0:
        await message.answer(
            f"Send /topup AMOUNT to add credits (a demo payment: no money moves), up to {limit} at once."
        )
        return
    amount = int(args)
    if amount > limit:
        await message.answer(f"A single top-up is limited to {credits(limit)}.")
        return
    # Telegram may deliver the same message again (a webhook retried, polling resumed after a
    # crash): keyed by the message, a redelivered /topup pays once.
    key = f"telegram:{message.chat.id}:{message.message_id}"
    outcome = await wallet.top_up(components, user_id, amount, key)
    balance = int(outcome.body["wallet"]["balance"])
    await message.answer(f"Added {credits(amount)}. Balance: {credits(balance)}.")


# -- inputs -----------------------------------------------------------------------------------------


async def offer_models(message: Message, components: Components, kind: InputKind, what: str) -> None:
    if await require_user(components, message) is None:
        return
    models = await runnable_models(components, kind)
    if not models:
        await message.answer(f"No model for {what} is available right now.")
        return
    await message.reply("What should I do with it?", reply_markup=models_keyboard(components, models))


async def enroll_label(message: Message, state: FSMContext, bot: Bot, components: Components) -> None:
    label = (message.text or "").strip()
    if not label or label.startswith("/") or len(label) > MAX_LABEL_LENGTH:
        await message.answer(f"Send a name of at most {MAX_LABEL_LENGTH} characters for the face.")
        return
    data = await state.get_data()
    await state.clear()
    if (user_id := await require_user(components, message)) is None:
        return
    photo = await download(bot, components, str(data["file_id"]), "photo.jpg")
    await run_and_report(message, components, user_id, ENROLL_SLUG, photo, {"label": label})


async def photo_message(message: Message, components: Components) -> None:
    await offer_models(message, components, "image", "photos")


async def document_message(message: Message, components: Components) -> None:
    await offer_models(message, components, "file", "files")


async def text_message(message: Message, components: Components) -> None:
    await offer_models(message, components, "text", "texts")


async def enroll_button(query: CallbackQuery, state: FSMContext, components: Components) -> None:
    message = query.message
    source = message.reply_to_message if isinstance(message, Message) else None
    if not isinstance(message, Message) or source is None or not source.photo:
        await query.answer("The photo is no longer available; send it again.", show_alert=True)
        return
    if await chats.chat_user(components, message.chat.id) is None:
        await query.answer(NOT_LINKED, show_alert=True)
        return
    await query.answer()
    await state.set_state(Enroll.waiting_for_label)
    await state.update_data(file_id=source.photo[-1].file_id)
    await message.answer("Send the name (label) to enroll this face under.")


async def run_button(query: CallbackQuery, bot: Bot, components: Components) -> None:
    message = query.message
    slug = (query.data or "").removeprefix(RUN_PREFIX)
    source = message.reply_to_message if isinstance(message, Message) else None
    if not isinstance(message, Message) or source is None:
        await query.answer("The input is no longer available; send it again.", show_alert=True)
        return
    user_id = await chats.chat_user(components, message.chat.id)
    if user_id is None:
        await query.answer(NOT_LINKED, show_alert=True)
        return
    await query.answer()
    try:
        given = await chat_input(bot, components, source)
    except AppError as exc:
        await message.answer(describe_error(exc).message)
        return
    await run_and_report(message, components, user_id, slug, given)


async def chat_input(bot: Bot, components: Components, source: Message) -> ChatInput:
    if source.photo:
        return await download(
            bot, components, source.photo[-1].file_id, "photo.jpg", source.photo[-1].file_size
        )
    if source.document:
        doc = source.document
        return await download(bot, components, doc.file_id, doc.file_name or "document", doc.file_size)
    return ChatInput(text=source.text)


async def download(
    bot: Bot, components: Components, file_id: str, filename: str, size: int | None = None
) -> ChatInput:
    limit = components.settings.max_upload_bytes
    if size is not None and size > limit:
        raise FileTooLarge(f"The file is larger than the limit of {limit} bytes.", limit=limit)
    buffer = io.BytesIO()
    await bot.download(file_id, destination=buffer)
    data = buffer.getvalue()
    if len(data) > limit:
        raise FileTooLarge(f"The file is larger than the limit of {limit} bytes.", limit=limit)
    return ChatInput(data=data, filename=filename)


# -- results ----------------------------------------------------------------------------------------


async def run_and_report(
    message: Message,
    components: Components,
    user_id: uuid.UUID,
    slug: str,
    given: ChatInput,
    params: dict[str, Any] | None = None,
) -> None:
    try:
        job_id = await submit_model(components, user_id, slug, given, params)
    except AppError as exc:
        await message.answer(refusal_text(exc))
        return
    status = StatusMessage(message)
    job = await follow_job(
        components,
        user_id,
        job_id,
        wait_s=components.settings.telegram_job_wait_seconds,
        on_unfinished=lambda job: status.show(status_text(job.status, job.progress, job.progress_message)),
    )
    await report(message, components, job, status)


class StatusMessage:
    """The message that shows a job's status while it runs: sent once, then edited when it changes
    (a failed edit is not worth failing the job's report for)."""

    def __init__(self, chat: Message) -> None:
        self.chat = chat
        self.sent: Message | None = None
        self.text = ""

    async def show(self, text: str) -> None:
        if text == self.text:
            return
        self.text = text
        if self.sent is None:
            self.sent = await self.chat.answer(text)
            return
        with contextlib.suppress(TelegramAPIError):
            await self.sent.edit_text(text)

    async def finish(self, text: str) -> None:
        """The outcome: in the status message when there is one, else a message of its own."""
        if self.sent is None:
            await self.chat.answer(text)
        else:
            await self.show(text)


def refusal_text(exc: BaseException) -> str:
    info = describe_error(exc)
    if info.code == "insufficient_credits":
        return f"Not enough credits: {info.message} Send /topup AMOUNT to add credits, or /balance."
    return f"Not run: {info.message}"


async def report(
    message: Message, components: Components, job: Job, status: StatusMessage | None = None
) -> None:
    status = status or StatusMessage(message)
    outcome = JobStatus(job.status)
    if outcome == JobStatus.succeeded:
        if status.sent is not None:
            await status.show("Done.")
        await message.answer(
            describe_output(task_of(components, job.model_slug), job.output or {})
            + f"\n\nCharged {credits(job.cost)}."
        )
        wanted = sent_artifacts(task_of(components, job.model_slug))
        if job.artifacts and job.files_expired_at is not None:
            await message.answer("Its files expired and are no longer stored.")
            return
        for name in sorted(job.artifacts or {}):
            if wanted is not None and name not in wanted:
                continue
            stored = await jobs.read_artifact(components, job.user_id, job.id, name)
            await message.answer_document(BufferedInputFile(stored.data, filename=stored.filename))
    elif outcome == JobStatus.failed:
        reason = job.error_message or "the model could not process this input"
        await status.finish(f"The job failed: {reason}. Nothing was charged.")
    else:
        await status.finish(unfinished_outcome(job.status, started=job.started_at is not None))


def build_router() -> Router:
    """The bot's handlers on a new router (a router belongs to one dispatcher)."""
    router = Router(name="mlservice")
    router.message.register(help_command, CommandStart())
    router.message.register(help_command, Command("help"))
    router.message.register(link_command, Command("link"))
    router.message.register(unlink_command, Command("unlink"))
    router.message.register(balance_command, Command("balance"))
    router.message.register(models_command, Command("models"))
    router.message.register(jobs_command, Command("jobs"))
    router.message.register(topup_command, Command("topup"))
    router.message.register(redeem_command, Command("redeem"))
    router.message.register(enroll_label, StateFilter(Enroll.waiting_for_label), F.text)
    router.message.register(photo_message, F.photo)
    router.message.register(document_message, F.document)
    router.message.register(text_message, F.text & ~F.text.startswith("/"))
    router.callback_query.register(enroll_button, F.data == ENROLL_DATA)
    router.callback_query.register(run_button, F.data.startswith(RUN_PREFIX))
    return router
