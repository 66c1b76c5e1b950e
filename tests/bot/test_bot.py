"""The bot end to end: real aiogram updates in, a Bot API stand-in on loopback recording what goes out."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from aiogram.methods import SendMessage
from aiogram.types import Update
from sqlalchemy import func, select, update

from mlservice.bot.notifier import ChatNotifier
from mlservice.bot.replies import status_text, unfinished_outcome
from mlservice.bot.runner import create_bot, create_dispatcher
from mlservice.chats import usecases as chats
from mlservice.chats.tables import ChatMessage, TelegramLinkCode
from mlservice.jobs.tables import Job
from mlservice.predictors.base import Predictor
from mlservice.predictors.image_classifier import ImageClassifier
from mlservice.types import utcnow
from tests.bot.telegram_standin import BotApiStandIn
from tests.conftest import Service
from tests.fixtures.predictors import (
    EchoText,
    FakeFaceEnroll,
    FileVerdict,
    PhotoLabels,
    StepParams,
    SteppingEcho,
)
from tests.fixtures.web import browser, csrf

TOKEN = "123456:TEST-token"
PREDICTORS = [PhotoLabels, FakeFaceEnroll, FileVerdict, EchoText]
_ids = itertools.count(1)


@dataclass
class Chat:
    """One Telegram chat talking to the bot."""

    id: int
    svc: Service
    api: BotApiStandIn
    bot: Bot
    dispatcher: Dispatcher

    def _message(self, **content: Any) -> dict[str, Any]:
        user = {"id": self.id, "is_bot": False, "first_name": "Ann"}
        return {
            "message_id": next(_ids),
            "date": 1_764_000_000,
            "chat": {"id": self.id, "type": "private"},
            "from": user,
            **content,
        }

    async def feed(self, update: dict[str, Any]) -> None:
        await self.dispatcher.feed_update(
            self.bot, Update.model_validate({"update_id": next(_ids), **update}, context={"bot": self.bot})
        )

    async def send(self, **content: Any) -> dict[str, Any]:
        message = self._message(**content)
        await self.feed({"message": message})
        return message

    async def say(self, text: str) -> str:
        before = len(self.api.texts())
        await self.send(text=text)
        texts = self.api.texts()
        assert len(texts) > before, f"no answer to {text!r}"
        return texts[-1]

    async def press(self, data: str, replying_to: dict[str, Any]) -> None:
        keyboard = self._message(text="What should I do with it?", reply_to_message=replying_to)
        keyboard["from"] = {"id": 1, "is_bot": True, "first_name": "mlservice"}
        query = {
            "id": str(next(_ids)),
            "from": {"id": self.id, "is_bot": False, "first_name": "Ann"},
            "chat_instance": "ci",
            "data": data,
            "message": keyboard,
        }
        await self.feed({"callback_query": query})

    def keyboard(self) -> list[tuple[str, str]]:
        """The buttons of the last message sent with an inline keyboard: (text, callback data)."""
        call = [c for c in self.api.sent("sendMessage") if "reply_markup" in c.fields][-1]
        rows = json.loads(call.fields["reply_markup"])["inline_keyboard"]
        return [(b["text"], b["callback_data"]) for row in rows for b in row]

    async def link(self) -> dict[str, str]:
        """Link this chat to a new account; its API headers."""
        headers = await self.svc.user()
        r = await self.svc.client.post("/api/telegram/link-code", headers=headers)
        assert r.status_code == 201, r.text
        assert "is now linked" in await self.say(f"/link {r.json()['code']}")
        return headers


@pytest.fixture
async def standin() -> AsyncIterator[BotApiStandIn]:
    api = BotApiStandIn()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def chat_factory(service_factory: Callable[..., Any], standin: BotApiStandIn) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(predictors: list[type[Predictor]] = PREDICTORS, **overrides: Any) -> AsyncIterator[Chat]:
        overrides.setdefault("telegram_job_wait_seconds", 30)
        async with service_factory(predictors, **overrides) as svc:
            bot = create_bot(TOKEN, standin.url)
            try:
                yield Chat(
                    next(_ids) + 10_000, svc, standin, bot, create_dispatcher(svc.app.state.components)
                )
            finally:
                await bot.session.close()

    return start


@pytest.fixture
async def chat(chat_factory: Callable[..., Any]) -> AsyncIterator[Chat]:
    async with chat_factory() as c:
        yield c


async def test_link_with_a_good_code_then_unlink(chat: Chat) -> None:
    await chat.link()
    assert (await chat.say("/balance")).startswith("Balance: 100 credits")
    assert await chat.say("/unlink") == "This chat is unlinked."
    assert "not linked" in await chat.say("/balance")
    assert await chat.say("/unlink") == "This chat was not linked."


async def test_a_code_works_once_and_a_wrong_code_is_refused(chat: Chat) -> None:
    assert "not valid" in await chat.say("/link WRONG123")
    headers = await chat.svc.user()
    code = (await chat.svc.client.post("/api/telegram/link-code", headers=headers)).json()["code"]
    assert "is now linked" in await chat.say(f"/link {code.lower()}")
    assert "not valid" in await chat.say(f"/link {code}")


async def test_an_expired_code_is_refused(chat: Chat) -> None:
    headers = await chat.svc.user()
    r = await chat.svc.client.post("/api/telegram/link-code", headers=headers)
    async with chat.svc.db.session(write=True) as session:
        await session.execute(update(TelegramLinkCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert "expired" in await chat.say(f"/link {r.json()['code']}")
    assert "not linked" in await chat.say("/balance")


async def test_an_unlinked_chat_can_do_nothing_that_costs(chat: Chat) -> None:
    for command in ("/balance", "/models", "/jobs", "/topup 10", "a film about robots"):
        assert "not linked" in await chat.say(command)
    photo = await chat.send(photo=[{"file_id": "p1", "file_unique_id": "p1", "width": 4, "height": 4}])
    assert "not linked" in chat.api.last_text()
    await chat.press("run:test-photo-labels", photo)
    answer = chat.api.sent("answerCallbackQuery")[-1]
    assert "not linked" in answer.fields["text"]
    assert not chat.api.sent("getFile")
    async with chat.svc.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
    assert "/link CODE" in await chat.say("/help")


async def test_models_jobs_and_topup(chat: Chat) -> None:
    await chat.link()
    models = await chat.say("/models")
    assert "Photo labels (tests) (test-photo-labels): 2 credits" in models
    assert "Face enroll (tests) (face-enroll): 1 credit" in models
    assert await chat.say("/jobs") == "You have no jobs yet."
    assert await chat.say("/topup 50") == "Added 50 credits. Balance: 150 credits."
    assert "limited" in await chat.say("/topup 999999999")
    await chat.send(text="a film about robots")
    await chat.press(
        "run:test-echo",
        chat.api.calls
        and {"message_id": 1, "date": 0, "chat": {"id": chat.id, "type": "private"}, "text": "robots"},
    )
    jobs = await chat.say("/jobs")
    assert "test-echo: succeeded (3 credits)" in jobs


async def test_low_balance_alerts_reach_the_linked_chat(chat: Chat) -> None:
    headers = await chat.link()
    r = await chat.svc.client.put("/api/wallet/alerts", json={"thresholds": [98]}, headers=headers)
    assert r.status_code == 200, r.text
    me = (await chat.svc.client.get("/api/users/me", headers=headers)).json()["id"]
    admin = await chat.svc.admin()
    r = await chat.svc.client.post(
        f"/api/admin/users/{me}/adjustments", json={"amount": -5, "note": "test"}, headers=admin
    )
    assert r.status_code == 200, r.text
    notifier = ChatNotifier(chat.svc.app.state.components, chat.bot)
    assert await notifier.dispatch() == 1
    sent = [c for c in chat.api.sent("sendMessage") if "running low" in c.fields["text"]]
    assert [int(c.fields["chat_id"]) for c in sent] == [chat.id]
    assert "95 available, below 98" in sent[0].fields["text"]
    assert await notifier.dispatch() == 0  # sent once
    async with chat.svc.db.session() as session:
        assert (await session.scalars(select(ChatMessage.status))).all() == ["sent"]


class FailingBot:
    """A bot whose every message meets ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def send_message(self, chat_id: int, text: str) -> None:
        raise self.error


async def test_a_chat_that_blocked_the_bot_is_given_up_and_a_flood_limit_waits(chat: Chat) -> None:
    method = SendMessage(chat_id=1, text="x")
    components = chat.svc.app.state.components
    user = uuid.UUID((await chat.svc.client.get("/api/users/me", headers=await chat.link())).json()["id"])
    async with chat.svc.db.session(write=True) as session:
        for chat_id in (1, 2):
            session.add(ChatMessage(chat_id=chat_id, user_id=user, text="hello"))
    blocked = ChatNotifier(components, FailingBot(TelegramForbiddenError(method, "bot was blocked")))  # type: ignore[arg-type]
    flooded = ChatNotifier(components, FailingBot(TelegramRetryAfter(method, "slow down", 90)))  # type: ignore[arg-type]
    claimed = await chats.claim_messages(components, timedelta(seconds=60), 1)
    await blocked.send(claimed[0])
    claimed = await chats.claim_messages(components, timedelta(seconds=60), 1)
    await flooded.send(claimed[0])
    async with chat.svc.db.session() as session:
        rows = {m.chat_id: m for m in await session.scalars(select(ChatMessage))}
    assert rows[1].status == "failed"
    assert "blocked" in (rows[1].last_error or "")
    assert (rows[2].status, rows[2].attempts) == ("pending", 1)
    assert rows[2].next_attempt_at >= utcnow() + timedelta(seconds=80)
    assert await chats.claim_messages(components, timedelta(seconds=60), 5) == []


async def test_balance_by_kind_and_a_promotion_code(chat: Chat) -> None:
    await chat.link()
    assert await chat.say("/balance") == "Balance: 100 credits.\nAvailable: 0 paid, 100 bonus."
    admin = await chat.svc.admin()
    r = await chat.svc.client.post(
        "/api/admin/promo-codes",
        json={"code": "BOT-5", "amount": 5, "max_uses": 3, "grant_days": 2},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert "Send /redeem CODE" in await chat.say("/redeem")
    redeemed = await chat.say("/redeem BOT-5")
    assert redeemed.startswith("Added 5 credits of bonus (they expire on ")
    assert redeemed.endswith("Balance: 105 credits.")
    assert "already" in (await chat.say("/redeem BOT-5")).lower()  # once per user
    assert await chat.say("/redeem NO-SUCH") == "No such promotion code."
    assert await chat.say("/topup 20") == "Added 20 credits. Balance: 125 credits."
    balance = await chat.say("/balance")
    assert balance == "Balance: 125 credits.\nAvailable: 20 paid, 105 bonus. 5 credits expire within 7 days."


async def test_photo_classify_and_cutout(chat: Chat) -> None:
    await chat.link()
    chat.api.files["photo-big"] = b"\x89PNG fake image bytes"
    photo = await chat.send(
        photo=[
            {"file_id": "photo-small", "file_unique_id": "s", "width": 2, "height": 2},
            {"file_id": "photo-big", "file_unique_id": "b", "width": 8, "height": 8, "file_size": 21},
        ]
    )
    # Buttons are named by the model's task (see mlservice.bot.replies).
    assert sorted(chat.keyboard()) == [
        ("Classify — 2 credits", "run:test-photo-labels"),
        ("Enroll a face — 1 credit", "enroll"),
    ]
    await chat.press("run:test-photo-labels", photo)
    assert chat.api.sent("getFile")[-1].fields["file_id"] == "photo-big"
    result = chat.api.sent("sendMessage")[-1].fields["text"]
    assert result.startswith("Labels:\ntabby: 75.0%\nlynx: 20.0%")
    assert "Charged 2 credits." in result
    document = chat.api.sent("sendDocument")[-1]
    assert document.files["document"] == ("cutout.png", b"\x89PNG fake image bytes")
    assert (await chat.say("/balance")).startswith("Balance: 98 credits")


async def test_text_gives_a_keyboard_then_a_result(chat: Chat) -> None:
    await chat.link()
    text = await chat.send(text="robots in love")
    assert chat.keyboard() == [("Echo (tests) — 3 credits", "run:test-echo")]
    await chat.press("run:test-echo", text)
    assert "ROBOTS IN LOVE" in chat.api.sent("sendMessage")[-1].fields["text"]


async def test_document_scan(chat: Chat) -> None:
    await chat.link()
    chat.api.files["doc-1"] = b"MZ\x90\x00 not really a program"
    document = await chat.send(
        document={"file_id": "doc-1", "file_unique_id": "d1", "file_name": "setup.exe", "file_size": 25}
    )
    assert chat.keyboard() == [("Scan for malware — 4 credits", "run:test-file-verdict")]
    await chat.press("run:test-file-verdict", document)
    result = chat.api.sent("sendMessage")[-1].fields["text"]
    assert result.startswith("Verdict: malicious")


async def test_enroll_asks_for_a_label(chat: Chat) -> None:
    await chat.link()
    chat.api.files["face"] = b"face bytes"
    photo = await chat.send(photo=[{"file_id": "face", "file_unique_id": "f", "width": 4, "height": 4}])
    await chat.press("enroll", photo)
    assert "label" in chat.api.last_text()
    assert (await chat.say("Ada Lovelace")).startswith("Enrolled the face as Ada Lovelace.")
    assert (await chat.say("/balance")).startswith("Balance: 99 credits")


async def test_insufficient_credits_are_explained(chat_factory: Callable[..., Any]) -> None:
    async with chat_factory(signup_bonus=2) as chat:
        await chat.link()
        text = await chat.send(text="robots")
        await chat.press("run:test-echo", text)
        answer = chat.api.last_text()
        assert answer.startswith("Not enough credits")
        assert "/topup" in answer
        assert (await chat.say("/balance")).startswith("Balance: 2 credits")


async def test_a_failed_job_is_reported(chat: Chat) -> None:
    await chat.link()
    text = await chat.send(text="boom")
    await chat.press("run:test-echo", text)
    assert chat.api.last_text().startswith("The job failed")
    assert "Nothing was charged" in chat.api.last_text()


class SlowStepParams(StepParams):
    steps: int = 5
    step_ms: int = 700


class SlowSteps(SteppingEcho):
    """test-steps taking its time by default (a chat's button sends no parameters): 3.5 s."""

    params_model = SlowStepParams


async def test_a_long_job_shows_its_progress_in_one_edited_message(chat_factory: Callable[..., Any]) -> None:
    async with chat_factory([SlowSteps]) as chat:
        await chat.link()
        text = await chat.send(text="slow going")
        await chat.press("run:test-steps", text)
        # One status message, edited as the job went on (only when what it says changed), then
        # "Done." and the result in a message of its own.
        [status] = [c for c in chat.api.sent("sendMessage") if c.fields["text"].startswith("Working on it")]
        edits = [c.fields for c in chat.api.sent("editMessageText")]
        assert edits, chat.api.texts()
        assert {e["message_id"] for e in edits} == {str(status_id(chat, status))}
        shown = [status.fields["text"]] + [e["text"] for e in edits]
        assert all(a != b for a, b in itertools.pairwise(shown)), shown
        assert any(re.fullmatch(r"Working on it: \d+%, step \d of 5", t) for t in shown), shown
        assert shown[-1] == "Done."
        assert len(edits) <= 3  # at most one edit every 2 s of a 3.5 s job
        assert "SLOW GOING" in chat.api.sent("sendMessage")[-1].fields["text"]


def status_id(chat: Chat, status: Any) -> int:
    """The message id the stand-in gave the status message (its ids count up from 1000)."""
    answered = [c for c in chat.api.calls if c.method in {"sendMessage", "sendDocument", "editMessageText"}]
    return 1000 + next(i for i, c in enumerate(answered) if c is status)


async def test_a_job_canceled_while_it_runs_is_told_in_its_status_message(
    chat_factory: Callable[..., Any],
) -> None:
    async with chat_factory([SlowSteps]) as chat:
        headers = await chat.link()
        text = await chat.send(text="stop me")
        pressed = asyncio.create_task(chat.press("run:test-steps", text))
        try:
            for _ in range(200):
                if any(t.startswith("Working on it") for t in chat.api.texts()):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(chat.api.texts())
            page = (await chat.svc.client.get("/api/jobs", headers=headers)).json()
            r = await chat.svc.client.post(f"/api/jobs/{page['items'][0]['id']}/cancel", headers=headers)
            assert r.status_code == 200, r.text
            await asyncio.wait_for(pressed, 10)
        finally:
            pressed.cancel()
        assert chat.api.last_text() == "The job was canceled while it ran. Nothing was charged."
        assert chat.api.sent("editMessageText")[-1].fields["text"] == chat.api.last_text()
        assert (await chat.say("/balance")).startswith("Balance: 100 credits")


def test_outcomes_of_jobs_that_did_not_run_to_the_end() -> None:
    assert unfinished_outcome("canceled", started=False) == (
        "The job was canceled before it started. Nothing was charged."
    )
    assert unfinished_outcome("aborted", started=False).startswith("The job was aborted: its deadline passed")
    assert unfinished_outcome("running", started=True) == "The job is still running; see /jobs later."
    assert status_text("queued", None, None).startswith("Queued")
    assert status_text("running", None, None) == "Working on it..."
    assert status_text("running", 0.4286, "step 3 of 7") == "Working on it: 42%, step 3 of 7"


async def test_an_aborted_job_is_reported(chat_factory: Callable[..., Any]) -> None:
    """The bot sets no deadline, but a job of its chat may be aborted all the same (here: written
    so while it waits for a worker, as the deadline sweep would)."""
    async with chat_factory([SlowSteps], workers=0) as chat:
        await chat.link()
        text = await chat.send(text="never")
        pressed = asyncio.create_task(chat.press("run:test-steps", text))
        try:
            for _ in range(200):
                if chat.api.texts()[-1].startswith("Queued"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(chat.api.texts())
            async with chat.svc.db.session() as session:
                await session.execute(update(Job).values(status="aborted", finished_at=utcnow()))
                await session.commit()
            await asyncio.wait_for(pressed, 10)
        finally:
            pressed.cancel()
        assert chat.api.last_text() == (
            "The job was aborted: its deadline passed before it started. Nothing was charged."
        )
        assert chat.api.sent("editMessageText")[-1].fields["text"] == chat.api.last_text()


async def test_the_wallet_page_shows_a_code_that_links(chat: Chat) -> None:
    email = f"web-{next(_ids)}@example.com"
    await chat.svc.user(email)
    async with browser(chat.svc, email) as client:
        assert "Get a link code" in (await client.get("/wallet")).text
        r = await client.post("/wallet/telegram-code", data={"csrf_token": csrf(client)})
        assert r.status_code == 200, r.text
        found = re.search(r'data-testid="telegram-code">/link ([A-Z0-9]+)<', r.text)
        assert found is not None
    assert f"linked to {email}" in await chat.say(f"/link {found.group(1)}")


async def test_the_webhook_route_checks_the_secret_and_feeds_the_bot(
    chat_factory: Callable[..., Any], standin: BotApiStandIn
) -> None:
    webhook = {
        "telegram_token": TOKEN,
        "telegram_api_url": standin.url,
        "telegram_webhook_url": "https://bot.example.com/telegram/webhook",
        "telegram_webhook_secret": "s3cret-token",
    }
    async with chat_factory(**webhook) as chat:
        update = {"update_id": 1, "message": chat._message(text="/help")}
        r = await chat.svc.client.post("/telegram/webhook", json=update)
        assert r.status_code == 403
        r = await chat.svc.client.post(
            "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
        )
        assert r.status_code == 403
        assert not standin.calls
        r = await chat.svc.client.post(
            "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
        )
        assert r.status_code == 204, r.text
        for _ in range(200):
            if standin.calls:
                break
            await asyncio.sleep(0.01)
        assert "/link CODE" in standin.last_text()


async def test_without_a_webhook_url_the_route_is_not_there(chat: Chat) -> None:
    r = await chat.svc.client.post("/telegram/webhook", json={"update_id": 1})
    assert r.status_code == 404


async def test_link_codes_need_a_user_and_are_stored_hashed(chat: Chat) -> None:
    assert (await chat.svc.client.post("/api/telegram/link-code")).status_code == 401
    headers = await chat.svc.user()
    first = (await chat.svc.client.post("/api/telegram/link-code", headers=headers)).json()
    second = (await chat.svc.client.post("/api/telegram/link-code", headers=headers)).json()
    assert len(second["code"]) == 8
    async with chat.svc.db.session() as session:
        stored = list(await session.scalars(select(TelegramLinkCode.code_hash)))
    assert second["code"] not in stored
    assert len(stored) == 1  # a new code replaces the user's earlier one
    assert "not valid" in await chat.say(f"/link {first['code']}")
    assert "is now linked" in await chat.say(f"/link {second['code']}")


async def test_the_real_classifier_labels_a_photo(
    chat_factory: Callable[..., Any], chelsea_jpeg: bytes
) -> None:
    async with chat_factory([ImageClassifier]) as chat:
        await chat.link()
        chat.api.files["chelsea"] = chelsea_jpeg
        photo = await chat.send(
            photo=[{"file_id": "chelsea", "file_unique_id": "c", "width": 451, "height": 300}]
        )
        ((button, data),) = chat.keyboard()
        assert data == "run:image-classification"
        assert button.startswith("Classify — ")
        await chat.press(data, photo)
        result = chat.api.last_text()
        assert result.startswith("Labels:\n")
        assert "cat" in result.split("\n")[1]
