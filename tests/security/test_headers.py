"""Security headers on every response, HSTS only over TLS, CORS only for listed origins, Host checks."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import Request

from mlservice.security.forwarded import TrustedProxies, parse_address
from mlservice.security.headers import DEFAULT_CSP
from tests.conftest import Service, wait_for_job
from tests.fixtures.predictors import EchoText
from tests.security.conftest import client_at

HSTS = "max-age=31536000; includeSubDomains"


def assert_hardened(response: httpx.Response, *, csp: str | None = None) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers.get_list("content-security-policy") == [csp or DEFAULT_CSP]


async def test_every_kind_of_answer_carries_the_headers(service: Service) -> None:
    headers = await service.user()
    answers = {
        "ok": await service.client.get("/api/users/me", headers=headers),
        "health": await service.client.get("/health"),
        "unauthenticated": await service.client.get("/api/users/me"),
        "not found": await service.client.get("/api/nothing-here"),
        "validation error": await service.client.post("/api/auth/register", json={}),
        "method not allowed": await service.client.delete("/api/wallet", headers=headers),
        "too large": await service.client.post(
            "/api/auth/register", content=b"x" * (service.settings.max_upload_bytes + 512 * 1024)
        ),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "ok": 200,
        "health": 200,
        "unauthenticated": 401,
        "not found": 404,
        "validation error": 422,
        "method not allowed": 405,
        "too large": 413,
    }
    for response in answers.values():
        assert_hardened(response)
        # Plain HTTP: a Strict-Transport-Security header would be ignored by browsers, and wrong.
        assert "strict-transport-security" not in response.headers
    assert answers["ok"].headers["cache-control"] == "no-store"


def test_the_default_policy_only_allows_this_origin() -> None:
    directives = dict(d.strip().split(" ", 1) for d in DEFAULT_CSP.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in DEFAULT_CSP
    assert "unsafe-eval" not in DEFAULT_CSP


async def test_api_docs_load_only_from_this_origin(service: Service) -> None:
    for path in ("/docs", "/redoc"):
        page = await service.client.get(path)
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert_hardened(page, csp=csp)
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        # No other origin anywhere: every script and style comes from the app.
        assert "http" not in csp
        assert "unsafe-eval" not in csp
        # Scripts: this origin and the page's own inline bootstrap (by hash), never any inline.
        assert "unsafe-inline" not in directives["script-src"]
        assert "cdn" not in page.text
        for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', page.text):
            served = await service.client.get(asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 1000
    swagger = (await service.client.get("/docs")).headers["content-security-policy"]
    assert "'sha256-" in swagger
    assert (await service.client.get("/openapi.json")).headers["content-security-policy"] == DEFAULT_CSP


async def test_downloads_keep_their_stricter_policy(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText]) as service:
        headers = await service.user()
        r = await service.client.post("/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=headers)
        job = await wait_for_job(service.client, headers, r.json()["id"])
        download = await service.client.get(job["artifacts"][0]["url"], headers=headers)
        assert download.status_code == 200
        # The route's own policy wins: no scripts, no plugins, a sandbox; framing is still denied.
        assert_hardened(download, csp="default-src 'none'; sandbox")


async def test_hsts_only_over_tls(service_factory: Any) -> None:
    async with service_factory(forwarded_allow_ips="10.0.0.1") as service:
        async with client_at(service, "198.51.100.1", base_url="https://testserver") as direct_tls:
            assert (await direct_tls.get("/health")).headers["strict-transport-security"] == HSTS
        async with client_at(service, "10.0.0.1") as proxy:
            # nginx terminated TLS and says so: believed from a trusted proxy.
            r = await proxy.get("/health", headers={"X-Forwarded-Proto": "https"})
            assert r.headers["strict-transport-security"] == HSTS
            r = await proxy.get("/health", headers={"X-Forwarded-Proto": "http"})
            assert "strict-transport-security" not in r.headers
        async with client_at(service, "198.51.100.1") as stranger:
            r = await stranger.get("/health", headers={"X-Forwarded-Proto": "https"})
            assert "strict-transport-security" not in r.headers
    async with (
        service_factory(hsts_seconds=0) as service,
        client_at(service, "198.51.100.1", base_url="https://testserver") as direct_tls,
    ):
        assert "strict-transport-security" not in (await direct_tls.get("/health")).headers


async def test_no_cors_unless_origins_are_listed(service: Service) -> None:
    preflight = await service.client.options(
        "/api/users/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    r = await service.client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_cors_for_listed_origins_only(service_factory: Any) -> None:
    async with service_factory(cors_origins="https://app.example.com, http://localhost:5173") as service:
        ok = await service.client.options(
            "/api/jobs",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Idempotency-Key",
            },
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
        assert ok.headers["access-control-allow-credentials"] == "true"
        assert_hardened(ok)
        r = await service.client.get("/health", headers={"Origin": "http://localhost:5173"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()

        refused = await service.client.options(
            "/api/jobs",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        r = await service.client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origins", ["*", "app.example.com", "https://app.example.com/path"])
def test_cors_origins_must_be_explicit(settings_factory: Any, origins: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        settings_factory(cors_origins=origins)


async def test_trusted_hosts(service_factory: Any) -> None:
    async with service_factory(trusted_hosts="api.example.com, *.internal.example.com") as service:
        for host, status in [
            ("api.example.com", 200),
            ("api.example.com:8443", 200),
            ("a.internal.example.com", 200),
            ("testserver", 400),
            ("evil.example", 400),
        ]:
            r = await service.client.get("/health", headers={"Host": host})
            assert r.status_code == status, host
            assert_hardened(r)
    async with service_factory() as service:  # the default, "*", for local use
        assert (await service.client.get("/health", headers={"Host": "anything.test"})).status_code == 200


# -- which X-Forwarded-For entry is the client -------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded_for", "client"),
    [
        (["127.0.0.1"], "127.0.0.1", "203.0.113.5", "203.0.113.5"),
        # Only the entry the trusted proxy added counts; the client wrote the rest.
        (["127.0.0.1"], "127.0.0.1", "1.1.1.1, 203.0.113.5", "203.0.113.5"),
        # Two trusted hops: the first untrusted entry from the right.
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", "8.8.8.8, 203.0.113.5, 10.0.0.7", "203.0.113.5"),
        # Garbage stops the walk at the last hop that could be believed.
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", "203.0.113.5, nonsense, 10.0.0.7", "10.0.0.7"),
        (["127.0.0.1"], "127.0.0.1", "unknown", "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        (["127.0.0.1"], "127.0.0.1", "203.0.113.5:5555", "203.0.113.5"),
        # "*": every hop is trusted, so the leftmost entry is taken (only safe behind a sole proxy).
        (["*"], "10.9.9.9", "192.0.2.1, 203.0.113.5", "192.0.2.1"),
    ],
)
def test_client_from_forwarded_for(trusted: list[str], peer: str, forwarded_for: str, client: str) -> None:
    assert TrustedProxies(trusted).client_from(peer, forwarded_for) == client


def test_trusted_proxies_membership() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1"])
    assert parse_address("10.200.0.1") in proxies
    assert parse_address("::ffff:10.0.0.1") in proxies  # IPv4-mapped, as dual-stack sockets report it
    assert parse_address("::1") in proxies
    assert parse_address("11.0.0.1") not in proxies
    assert None not in proxies
    assert parse_address("11.0.0.1") in TrustedProxies(["*"])
    assert parse_address("127.0.0.1") not in TrustedProxies([])


async def test_forwarded_for_is_ignored_from_untrusted_peers(service_factory: Any) -> None:
    seen: list[tuple[str, str]] = []

    async def show(request: Request) -> None:
        seen.append((request.client.host if request.client else "", request.url.scheme))

    forwarded = {"X-Forwarded-For": "192.0.2.1", "X-Forwarded-Proto": "https"}
    async with service_factory(forwarded_allow_ips="10.0.0.1") as service:
        service.app.add_api_route("/test-client-address", show)
        async with client_at(service, "198.51.100.3") as stranger, client_at(service, "10.0.0.1") as proxy:
            await stranger.get("/test-client-address", headers=forwarded)
            await proxy.get("/test-client-address", headers=forwarded)
    assert seen == [("198.51.100.3", "http"), ("192.0.2.1", "https")]
