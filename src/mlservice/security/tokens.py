"""Access tokens: HS256 JWTs that must carry an expiry, a subject and our audience."""

from __future__ import annotations

from typing import Generic

import jwt
from fastapi_users import exceptions, models
from fastapi_users.authentication import JWTStrategy
from fastapi_users.manager import BaseUserManager

ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32
AUDIENCE = ["fastapi-users:auth"]


class StrictJWTStrategy(JWTStrategy[models.UP, models.ID], Generic[models.UP, models.ID]):
    """fastapi-users' JWT strategy, stricter where it is lenient.

    * One algorithm, HS256: ``alg: none`` and any other algorithm (HS512 with the same secret
      included) are refused, and nothing configures another.
    * ``exp`` is required: the library accepts a token without one as valid forever.
    * ``sub`` and ``aud`` are required too, the audience being ours.
    * A secret of at least 32 characters and a positive lifetime, checked when built.
    """

    def __init__(self, secret: str, lifetime_seconds: int) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_LENGTH} characters")
        if lifetime_seconds <= 0:
            raise ValueError("access tokens need a positive lifetime")
        super().__init__(
            secret=secret, lifetime_seconds=lifetime_seconds, token_audience=AUDIENCE, algorithm=ALGORITHM
        )

    def decode(self, token: str) -> dict[str, object]:
        """The verified claims; raises ``jwt.PyJWTError`` for any token we do not accept."""
        claims: dict[str, object] = jwt.decode(
            token,
            self.secret if isinstance(self.secret, str) else self.secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=self.token_audience,
            options={"require": ["exp", "sub", "aud"], "verify_exp": True, "verify_aud": True},
        )
        return claims

    async def read_token(
        self, token: str | None, user_manager: BaseUserManager[models.UP, models.ID]
    ) -> models.UP | None:
        if token is None:
            return None
        try:
            subject = self.decode(token)["sub"]
        except jwt.PyJWTError:
            return None
        try:
            return await user_manager.get(user_manager.parse_id(subject))
        except (exceptions.UserNotExists, exceptions.InvalidID):
            return None
