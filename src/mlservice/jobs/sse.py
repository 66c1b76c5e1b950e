"""The HTTP side of a job's event streams: a ``text/event-stream`` response (sse-starlette's, with
keep-alive pings and ``X-Accel-Buffering: no`` for nginx) that holds one of the user's stream slots
until it ends, the client went away or the response failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from mlservice.jobs.stream_slots import StreamSlot
from mlservice.jobs.streams import PING_S

__all__ = ["STREAM_RESPONSE", "ServerSentEvent", "event_stream"]

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events (`text/event-stream`)",
        # Each event of the stream, as OpenAPI 3.2 describes a stream's items (and contract
        # checkers read them): its fields, every one a string.
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "event": {"type": "string"},
                        "data": {"type": "string"},
                        "id": {"type": "string"},
                        "retry": {"type": "integer"},
                    },
                }
            }
        },
    }
}


async def _holding(
    slot: StreamSlot, events: AsyncIterator[ServerSentEvent]
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for event in events:
            yield event
    finally:
        slot.release()


def event_stream(slot: StreamSlot, events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    """Send ``events`` as they come; the slot goes back when they end or the client disconnects
    (and, should the stream never start, once the response is over)."""
    return EventSourceResponse(
        _holding(slot, events),
        ping=PING_S,
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(slot.release),
    )
