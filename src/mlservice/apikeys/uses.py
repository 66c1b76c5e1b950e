"""Recording when each API key was last used, off the requests that use it."""

from __future__ import annotations

import logging
import uuid

from mlservice.apikeys.usecases import record_key_use
from mlservice.db import Database

log = logging.getLogger(__name__)


class KeyUses:
    """Records keys' ``last_used_at``, off the request's own transaction.

    At most once a minute per key (the key's last use, read with it, says when one is due; the
    write is guarded too, for other processes), and one write in flight per key in this process,
    so a burst of requests on a key queues one write for the SQLite writer, not one per request.
    Best effort: a failed record is logged and the next due request tries again.
    """

    def __init__(self) -> None:
        self._in_flight: set[uuid.UUID] = set()

    async def record(self, db: Database, key_id: uuid.UUID) -> None:
        if key_id in self._in_flight:
            return
        self._in_flight.add(key_id)
        try:
            await record_key_use(db, key_id)
        except Exception:
            log.warning("could not record the use of API key %s", key_id, exc_info=True)
        finally:
            self._in_flight.discard(key_id)
