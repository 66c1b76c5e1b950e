"""OpenID Connect relying party: discovery, the authorization request (code flow with PKCE), the
code exchange and the ID token's checks. No database here: the use cases keep what a login must
remember (:class:`~mlservice.users.tables.OidcLogin`) and decide what the identity means for an
account.

The ID token is checked with joserfc: its signature against the provider's published keys
(fetched again when a token names a key id we do not know, so the provider may rotate its keys),
``iss``, ``aud`` (and ``azp`` when several audiences), ``exp``, ``iat`` and the login's ``nonce``.
The HTTP calls go through one httpx client, whose transport a test may replace.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from mlservice.errors import AppError
from mlservice.settings import OidcProvider

# What a provider's metadata is trusted for before it is read again.
_DISCOVERY_TTL_S = 3600.0
# The signature algorithms an ID token may use (never "none", never a MAC with our secret).
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_CLOCK_SKEW_S = 60


class OidcError(AppError):
    """A login through a provider that cannot go on; the page says why and offers the others."""

    status_code = 400
    code = "oidc_error"


class ProviderUnavailable(OidcError):
    status_code = 502
    code = "oidc_provider_unavailable"


class UnknownProvider(OidcError):
    status_code = 404
    code = "oidc_unknown_provider"


class StateInvalid(OidcError):
    code = "oidc_state_invalid"


class LoginDenied(OidcError):
    """The provider answered with an error (the user canceled, or it refused the client)."""

    code = "oidc_login_denied"


class CodeRejected(OidcError):
    code = "oidc_code_rejected"


class IdTokenInvalid(OidcError):
    code = "oidc_id_token_invalid"


class IssuerMismatch(OidcError):
    code = "oidc_issuer_mismatch"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in, from a checked ID token (and the userinfo endpoint)."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    # True or False when the provider is configured with an admin claim; None: it says nothing.
    is_admin: bool | None


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """What a login sent to the provider must remember until it comes back."""

    state: str
    nonce: str
    code_verifier: str
    url: str


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _is_admin(config: OidcProvider, claims: dict[str, Any]) -> bool | None:
    if not config.admin_claim:
        return None
    value = claims.get(config.admin_claim)
    if not config.admin_value:
        return value is True or value == "true"
    if isinstance(value, list):
        return config.admin_value in value
    return value == config.admin_value


class OidcClient:
    """One configured provider: its metadata and keys, read when first needed and kept."""

    def __init__(self, config: OidcProvider, http: OidcHttp) -> None:
        self.config = config
        self._http = http
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (``ProviderUnavailable`` when it cannot be read)."""
        if self._metadata is None or time.monotonic() - self._metadata_at > _DISCOVERY_TTL_S:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            found = await self._http.get_json(url)
            for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(found.get(field), str):
                    raise ProviderUnavailable(f"The provider's metadata has no {field}.")
            # OpenID Connect Discovery 1.0 §4.3: the document must name the issuer we asked.
            if found["issuer"].rstrip("/") != self.config.issuer.rstrip("/"):
                raise ProviderUnavailable("The provider's metadata names another issuer.")
            self._metadata, self._metadata_at = found, time.monotonic()
        return self._metadata

    async def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where to send a browser to log out at the provider too, or None (it has no such page,
        or cannot be reached: our session is ended either way)."""
        try:
            endpoint = (await self.metadata()).get("end_session_endpoint")
        except ProviderUnavailable:
            return None
        if not isinstance(endpoint, str):
            return None
        query = {"client_id": self.config.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    async def start(self, redirect_uri: str) -> LoginRequest:
        metadata = await self.metadata()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
        endpoint = metadata["authorization_endpoint"]
        url = f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"
        return LoginRequest(state, nonce, verifier, url)

    async def finish(
        self, code: str, code_verifier: str, nonce: str, redirect_uri: str, *, response_iss: str | None
    ) -> Identity:
        """Exchange the code and check the ID token; the identity it proves. ``response_iss``: the
        ``iss`` of the authorization response (RFC 9207), which must be this provider's when given,
        so that a code another provider issued is never sent to this one (a mix-up)."""
        metadata = await self.metadata()
        if response_iss is not None and response_iss != metadata["issuer"]:
            raise IssuerMismatch("The answer came from another identity provider than this login's.")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        auth = None
        if self.config.client_secret is None:
            form["client_id"] = self.config.client_id  # a public client names itself
        else:
            # client_secret_basic (RFC 6749 §2.3.1: both parts form-encoded before Base64)
            secret = self.config.client_secret.get_secret_value()
            auth = httpx.BasicAuth(quote(self.config.client_id, safe=""), quote(secret, safe=""))
        tokens = await self._http.token(metadata["token_endpoint"], form, auth)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise IdTokenInvalid("The provider sent no ID token.")
        claims = await self._checked_claims(id_token, metadata, nonce)
        access_token = tokens.get("access_token")
        userinfo_url = metadata.get("userinfo_endpoint")
        if "email" not in claims and isinstance(access_token, str) and isinstance(userinfo_url, str):
            # Providers that keep the ID token small (conformant mode) give the rest here.
            extra = await self._http.get_json(userinfo_url, bearer=access_token)
            if extra.get("sub") == claims["sub"]:
                claims = {**extra, **claims}
        email = claims.get("email")
        # What our columns hold (oidc_links.subject, users.email): longer is no identity we keep.
        if len(str(claims["sub"])) > 255 or (isinstance(email, str) and len(email) > 320):
            raise IdTokenInvalid("The ID token's subject or e-mail address is too long.")
        return Identity(
            provider=self.config.name,
            subject=str(claims["sub"]),
            email=email.strip().lower() if isinstance(email, str) and email.strip() else None,
            email_verified=claims.get("email_verified") is True or claims.get("email_verified") == "true",
            is_admin=_is_admin(self.config, claims),
        )

    async def _keyset(self, jwks_uri: str, *, refresh: bool) -> KeySet:
        if self._keys is None or refresh:
            try:
                self._keys = KeySet.import_key_set(await self._http.get_json(jwks_uri))  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError):
                raise ProviderUnavailable("The provider's keys cannot be read.") from None
        return self._keys

    async def _checked_claims(self, id_token: str, metadata: dict[str, Any], nonce: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(id_token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise IdTokenInvalid("The ID token is not a signed token.") from None
        keys = await self._keyset(metadata["jwks_uri"], refresh=False)
        kid = header.get("kid")
        if kid is not None and all(key.kid != kid for key in keys.keys):
            # A key we have not seen: the provider rotated its keys since we read them.
            keys = await self._keyset(metadata["jwks_uri"], refresh=True)
        try:
            token = jwt.decode(id_token, keys, algorithms=_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=_CLOCK_SKEW_S,
                iss={"essential": True, "value": metadata["issuer"]},
                aud={"essential": True, "value": self.config.client_id},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except JoseError as exc:
            raise IdTokenInvalid(f"The ID token was refused ({exc.error}).") from None
        claims: dict[str, Any] = token.claims
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise IdTokenInvalid("The ID token was issued to another client (azp).")
        return claims


class OidcHttp:
    """The provider calls, with one timeout; a connection that fails or a 5xx is
    ``ProviderUnavailable``."""

    def __init__(self, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.timeout_s = timeout_s
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get_json(self, url: str, *, bearer: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        try:
            response = await self._http().get(url, headers=headers)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError):
            raise ProviderUnavailable("The identity provider cannot be reached.") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable("The identity provider answered something unexpected.")
        return body

    async def token(self, url: str, form: dict[str, str], auth: httpx.Auth | None) -> dict[str, Any]:
        try:
            if auth is None:
                response = await self._http().post(url, data=form)
            else:
                response = await self._http().post(url, data=form, auth=auth)
        except httpx.HTTPError:
            raise ProviderUnavailable("The identity provider cannot be reached.") from None
        if response.status_code >= 500:
            raise ProviderUnavailable("The identity provider failed to answer.")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderUnavailable("The identity provider answered something unexpected.")
        if response.status_code != 200:
            # invalid_grant: a code used before, expired, or not made for this login's verifier.
            raise CodeRejected(f"The provider refused the login's code ({body.get('error', 'error')}).")
        return body


class OidcProviders:
    """Every configured provider, by name, sharing one HTTP client."""

    def __init__(self, configs: dict[str, OidcProvider], timeout_s: float) -> None:
        self.http = OidcHttp(timeout_s)
        self._clients = {name: OidcClient(config, self.http) for name, config in configs.items()}

    def __bool__(self) -> bool:
        return bool(self._clients)

    def buttons(self) -> list[tuple[str, str]]:
        """(name, label) of each provider, for the login and register pages."""
        return [(name, client.config.label) for name, client in self._clients.items()]

    def get(self, name: str) -> OidcClient:
        try:
            return self._clients[name]
        except KeyError:
            raise UnknownProvider("There is no such identity provider here.") from None

    async def close(self) -> None:
        await self.http.close()
