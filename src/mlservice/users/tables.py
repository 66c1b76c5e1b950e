from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base
from mlservice.types import UTCDateTime, utcnow


class User(Base):
    """An account. ``is_superuser`` is the admin role; ``role`` names it for the API.

    ``hashed_password`` is a pwdlib hash (Argon2id; older bcrypt hashes verify and are rehashed at
    the next login). ``is_verified`` is kept for the schema's sake: nothing requires it yet.
    """

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    hashed_password: Mapped[str] = mapped_column(String(1024))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    is_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def role(self) -> str:
        return "admin" if self.is_superuser else "user"


class AuthSession(Base):
    """A signed-in browser: the session cookie's token names it, and logging out ends it here, so a
    copied cookie stops working too (a bearer token, by contrast, lives until it expires)."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The OpenID provider the browser signed in through (None: a password): logging out sends the
    # browser to its end-session endpoint.
    provider: Mapped[str | None] = mapped_column(String(32))


class OidcLink(Base):
    """An account's identity at an OpenID provider: its ``sub`` there, stable for life, whatever the
    e-mail address the provider reports later."""

    __tablename__ = "oidc_links"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OidcLogin(Base):
    """A login sent to a provider and not back yet: what its answer must match (``state``, the
    ``nonce`` in the ID token) and the PKCE verifier. Deleted when the answer comes, so a state
    works once."""

    __tablename__ = "oidc_logins"

    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[str] = mapped_column(String(64))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_path: Mapped[str] = mapped_column(String(2048))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
