"""Passwords: the policy, and hashing with pwdlib (Argon2id for new hashes; bcrypt hashes still verify).

Hashing is deliberately slow (tens of milliseconds of CPU), so it runs in a worker thread: a burst
of logins must not stall every other request on the event loop.
"""

from __future__ import annotations

import asyncio
import re

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128

# The first hasher makes new hashes; the others only verify (and are rehashed on the next login).
_hasher = PasswordHash((Argon2Hasher(), BcryptHasher()))
# Verified against when an e-mail has no account, so a login takes as long whether it exists or not.
_DUMMY_HASH = _hasher.hash("no account has this password 0")


def password_problem(password: str, email: str | None = None) -> str | None:
    """Why a password is refused, or None. Kept in one place for the API, the web UI and the CLI."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"The password must be at least {PASSWORD_MIN_LENGTH} characters long."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"The password must be at most {PASSWORD_MAX_LENGTH} characters long."
    if not re.search(r"[^\W\d_]", password) or not re.search(r"\d", password):
        return "The password must contain both letters and digits."
    if email and email.split("@", 1)[0].lower() in password.lower():
        return "The password must not contain your e-mail address."
    return None


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """Whether ``password`` matches ``hashed``, and a new hash to store when the old one is of an
    outdated scheme or cost (else None). ``hashed`` None (no such account) is checked against a
    dummy hash, then refused."""
    if hashed is None:
        await asyncio.to_thread(_hasher.verify, password, _DUMMY_HASH)
        return False, None
    try:
        return await asyncio.to_thread(_hasher.verify_and_update, password, hashed)
    except Exception:  # a hash of no known scheme: never a match
        return False, None
