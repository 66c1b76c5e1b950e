"""What counts as the database being unreachable, and how a unit of work reports it (the whole
outage, server stopped and started under load, is tests/ops/test_database_outage.py)."""

from __future__ import annotations

import logging
import socket

import asyncpg
import pytest
from sqlalchemy import text

from mlservice.db import Database
from mlservice.errors import ServiceUnavailable, describe_error, is_outage


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    ],
)
def test_driver_errors_of_an_unreachable_server_are_outages(exc: BaseException) -> None:
    assert is_outage(exc)
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = exc
    assert is_outage(wrapped)


@pytest.mark.parametrize(
    "exc",
    [FileNotFoundError(2, "no such file"), ValueError("bad"), asyncpg.UniqueViolationError("duplicate")],
)
def test_other_errors_are_not(exc: BaseException) -> None:
    assert not is_outage(exc)


async def test_a_unit_of_work_on_an_unreachable_server_is_a_503_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nowhere")
    caplog.set_level(logging.WARNING, logger="mlservice.dependencies")
    try:
        for write in (False, True, False):
            with pytest.raises(ServiceUnavailable) as raised:
                async with db.session(write=write) as session:
                    await session.execute(text("SELECT 1"))
            info = describe_error(raised.value)
            assert (info.status_code, info.code) == (503, "service_unavailable")
            assert info.headers["Retry-After"] == "5"
            assert info.details == {"dependency": "database"}
        with pytest.raises(ServiceUnavailable):
            async with db.driver():
                pass
    finally:
        await db.dispose()
    warnings = [r.getMessage() for r in caplog.records if r.name == "mlservice.dependencies"]
    assert len(warnings) == 1
    assert warnings[0].startswith("database unreachable: ConnectionRefusedError")
