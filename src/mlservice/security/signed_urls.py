"""Links that work without a credential for a while: a ``/v1`` prediction's file outputs and its
``urls.stream``, as Replicate's are (its clients fetch both with no ``Authorization`` header).

A link is its path plus ``?token=``: an HS256 JWT (PyJWT, as access tokens are) whose subject is
the exact path and which names the owner of what it opens. It is signed with a key derived from
the JWT secret for this purpose only, and has an audience of its own: neither an access token nor
a link's token passes for the other. Expiries are rounded up to the next ``_STEP_S``, so a page of
predictions read twice within a few minutes carries the same links (caches keep them).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
import uuid
from urllib.parse import quote

import jwt
import jwt.types

TOKEN_PARAMETER = "token"  # noqa: S105 (the name of a query parameter)
_ALGORITHM = "HS256"
_AUDIENCE = "mlservice:link"
_STEP_S = 300
_REQUIRED: jwt.types.Options = {
    "require": ["exp", "sub", "aud", "own"],
    "verify_exp": True,
    "verify_aud": True,
}


class SignedUrls:
    """Signs paths on this server for their owner and checks the links it signed."""

    def __init__(self, secret: str, lifetime_seconds: int) -> None:
        if lifetime_seconds <= 0:
            raise ValueError("links need a positive lifetime")
        self._key = hmac.new(secret.encode(), b"mlservice signed links", hashlib.sha256).digest()
        self.lifetime_seconds = lifetime_seconds

    def sign(self, path: str, owner: uuid.UUID, *, now: float | None = None) -> str:
        """``path?token=…``: opens ``path`` (as ``owner``) for ``lifetime_seconds`` at least."""
        expires = math.ceil(((now or time.time()) + self.lifetime_seconds) / _STEP_S) * _STEP_S
        claims = {"sub": path, "own": str(owner), "aud": _AUDIENCE, "exp": expires}
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        return f"{path}?{TOKEN_PARAMETER}={quote(token, safe='')}"

    def owner(self, path: str, token: str) -> uuid.UUID | None:
        """Whose link to ``path`` ``token`` is, or None: not ours, for another path, or expired."""
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[_ALGORITHM], audience=_AUDIENCE, options=_REQUIRED
            )
            if claims["sub"] != path:
                return None
            return uuid.UUID(str(claims["own"]))
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
