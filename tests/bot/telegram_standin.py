"""A small Bot API stand-in on loopback: answers what aiogram calls and records every call."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    method: str
    fields: dict[str, str]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)


class BotApiStandIn:
    """Serves ``/bot<token>/<method>`` and ``/file/bot<token>/<path>`` like api.telegram.org."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.files: dict[str, bytes] = {}
        self._ids = itertools.count(1000)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def sent(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def texts(self) -> list[str]:
        return [c.fields["text"] for c in self.calls if c.method in {"sendMessage", "editMessageText"}]

    def last_text(self) -> str:
        return self.texts()[-1]

    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        form = await request.post()
        fields: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files[name] = (value.filename, value.file.read())
            else:
                fields[name] = str(value)
        # aiogram sends a file as a part of its own, named by an attach://NAME field.
        for name, value in list(fields.items()):
            if value.startswith("attach://") and value.removeprefix("attach://") in files:
                files[name] = files.pop(value.removeprefix("attach://"))
        self.calls.append(Call(method, fields, files))
        return web.json_response({"ok": True, "result": self._result(method, fields)})

    def _result(self, method: str, fields: dict[str, str]) -> Any:
        if method in {"sendMessage", "sendDocument", "editMessageText"}:
            message: dict[str, Any] = {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "chat": {"id": int(fields["chat_id"]), "type": "private"},
            }
            if "text" in fields:
                message["text"] = fields["text"]
            if method == "sendDocument":
                message["document"] = {"file_id": "sent", "file_unique_id": "sent"}
            return message
        if method == "getFile":
            file_id = fields["file_id"]
            return {"file_id": file_id, "file_unique_id": file_id, "file_path": f"files/{file_id}"}
        if method == "getMe":
            return {"id": 1, "is_bot": True, "first_name": "mlservice"}
        return True

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].removeprefix("files/")
        if file_id not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[file_id])
