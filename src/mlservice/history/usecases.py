"""Writing the request history where no job's transaction does it: a refused prediction request."""

from __future__ import annotations

import logging

from mlservice.db import Database
from mlservice.history.recording import RequestRecord, refusal

log = logging.getLogger(__name__)


async def record_refusal(db: Database, record: RequestRecord, exc: BaseException) -> None:
    """Write a refused request's row in its own transaction, unless it was written already; a
    failure here is only logged."""
    if record.recorded:
        return
    record.recorded = True
    status, code = refusal(exc)
    try:
        async with db.session(write=True) as session:
            session.add(record.row(status, error_code=code))
    except Exception:
        log.warning("could not record the refused prediction request", exc_info=True)
