"""How ``/v1`` pages its lists, as Replicate does: a page size, and the URLs of the pages around one.

Predictions are paged by keyset (see :class:`mlservice.replicate.predictions.Cursor`); models,
few and rarely changed, by offset.
"""

from __future__ import annotations

from urllib.parse import urlencode

from mlservice.replicate.errors import InvalidCursor

PAGE_SIZE = 100


def page_url(base_url: str, path: str, cursor: str | None, limit: int | None) -> str | None:
    if cursor is None:
        return None
    query: dict[str, str | int] = {"cursor": cursor}
    if limit is not None:
        query["limit"] = limit
    return f"{base_url}{path}?{urlencode(query)}"


def offset_of(token: str | None) -> int:
    """Models are few and change rarely: their cursor is an offset."""
    if token is None:
        return 0
    if not (token.isascii() and token.isdigit()) or len(token) > 9:
        raise InvalidCursor("This cursor is not one this server made.")
    return int(token)
