"""The cap on the event streams each user keeps open in one API process
(``max_streams_per_user``): past it a new stream is refused with ``429 too_many_streams``."""

from __future__ import annotations

import uuid

from mlservice.jobs.errors import TooManyStreams


class StreamSlot:
    """One open stream of a user; :meth:`release` (idempotent) gives it back."""

    def __init__(self, slots: StreamSlots, user_id: uuid.UUID) -> None:
        self._slots = slots
        self._user_id = user_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._user_id)


class StreamSlots:
    """The event streams each user has open in this process, up to ``per_user`` (0: no cap)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[uuid.UUID, int] = {}

    def open(self, user_id: uuid.UUID) -> StreamSlot:
        """A slot for one more stream of ``user_id``, or ``TooManyStreams`` (429)."""
        count = self._open.get(user_id, 0)
        if self.per_user and count >= self.per_user:
            raise TooManyStreams(
                f"You have {count} event streams open, the most allowed; close one first.",
                limit=self.per_user,
            )
        self._open[user_id] = count + 1
        return StreamSlot(self, user_id)

    def count(self, user_id: uuid.UUID) -> int:
        return self._open.get(user_id, 0)

    def _release(self, user_id: uuid.UUID) -> None:
        count = self._open.get(user_id, 0) - 1
        if count > 0:
            self._open[user_id] = count
        else:
            self._open.pop(user_id, None)
