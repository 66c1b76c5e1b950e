"""Access tokens: HS256 JWTs that must carry an expiry, a subject and our audience.

* One algorithm, HS256: ``alg: none`` and any other algorithm (HS512 with the same secret
  included) are refused, and nothing configures another.
* ``exp``, ``sub`` and ``aud`` are required, the audience being ours.
* A cookie session's token names its session (``sid``), which the server can end (see
  :mod:`mlservice.users.sessions`); a bearer token lives until it expires.
* A secret of at least 32 characters and a positive lifetime, checked when built.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
import jwt.types
from cachetools import LRUCache

ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32
# The audience tokens have carried since the first release: tokens issued before keep working.
AUDIENCE = ["fastapi-users:auth"]
_VERIFIED_TOKENS = 65_536
_REQUIRED: jwt.types.Options = {"require": ["exp", "sub", "aud"], "verify_exp": True, "verify_aud": True}


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: uuid.UUID
    session_id: uuid.UUID | None
    expires_at: float


class AccessTokens:
    """Issues and verifies access tokens with one secret and one lifetime."""

    def __init__(self, secret: str, lifetime_seconds: int) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_LENGTH} characters")
        if lifetime_seconds <= 0:
            raise ValueError("access tokens need a positive lifetime")
        self._secret = secret
        self.lifetime_seconds = lifetime_seconds
        # Tokens verified lately: a client sends the same one with every request, and checking the
        # signature and parsing the claims was a good part of what authenticating cost.
        self._verified: LRUCache[str, Claims] = LRUCache(maxsize=_VERIFIED_TOKENS)

    def issue(self, user_id: uuid.UUID, *, session_id: uuid.UUID | None = None) -> str:
        claims: dict[str, object] = {
            "sub": str(user_id),
            "aud": AUDIENCE,
            "exp": int(time.time()) + self.lifetime_seconds,
        }
        if session_id is not None:
            claims["sid"] = str(session_id)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Claims | None:
        """The token's claims, or None for any token we do not accept (an expired one included)."""
        known = self._verified.get(token)
        if known is not None:
            return known if known.expires_at > time.time() else None
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], audience=AUDIENCE, options=_REQUIRED
            )
            sid = claims.get("sid")
            verified = Claims(
                uuid.UUID(str(claims["sub"])),
                uuid.UUID(sid) if isinstance(sid, str) else None,
                float(claims["exp"]),
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        self._verified[token] = verified
        return verified
