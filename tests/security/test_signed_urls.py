"""Signed links (``mlservice.security.signed_urls``) and the https settings, without a server."""

from __future__ import annotations

import time
import uuid

import pytest
from pydantic import ValidationError

from mlservice.security.signed_urls import SignedUrls
from mlservice.security.tokens import AccessTokens
from mlservice.settings import Settings

SECRET = "a test secret of more than 32 characters"


def token_of(link: str) -> str:
    return link.partition("?token=")[2]


def test_a_link_opens_its_path_for_its_owner_until_it_expires() -> None:
    links = SignedUrls(SECRET, 3600)
    owner = uuid.uuid4()
    now = time.time()
    link = links.sign("/api/jobs/1/artifacts/cutout", owner, now=now)
    assert link.startswith("/api/jobs/1/artifacts/cutout?token=")
    assert links.owner("/api/jobs/1/artifacts/cutout", token_of(link)) == owner
    assert links.owner("/api/jobs/2/artifacts/cutout", token_of(link)) is None
    assert links.owner("/api/jobs/1/artifacts/cutout", token_of(link)[:-3] + "abc") is None
    stale = links.sign("/api/jobs/1/artifacts/cutout", owner, now=now - 3600 - 301)
    assert links.owner("/api/jobs/1/artifacts/cutout", token_of(stale)) is None
    # Another secret's links, and access tokens of the same secret, open nothing.
    other = SignedUrls("another secret of more than 32 characters", 3600).sign("/p", owner)
    assert links.owner("/p", token_of(other)) is None
    assert links.owner("/p", AccessTokens(SECRET, 3600).issue(owner)) is None


def test_links_signed_within_a_few_minutes_are_the_same() -> None:
    links = SignedUrls(SECRET, 3600)
    owner = uuid.uuid4()
    start = (time.time() // 300) * 300
    assert links.sign("/p", owner, now=start + 1) == links.sign("/p", owner, now=start + 299)
    assert links.sign("/p", owner, now=start + 1) != links.sign("/p", owner, now=start + 301)


def test_tls_files_go_together_and_empty_means_unset() -> None:
    assert Settings(tls_certfile="", tls_keyfile="").tls_certfile is None
    with pytest.raises(ValidationError, match="go together"):
        Settings(tls_certfile="/etc/ssl/server.pem")
