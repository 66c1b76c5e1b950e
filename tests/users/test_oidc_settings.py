"""The OpenID providers as the settings give them: one through MLSERVICE_OIDC_*, more as JSON."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mlservice.settings import Settings


def test_one_provider_from_the_flat_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVICE_OIDC_ISSUER", "https://sso.example.com/realms/acme")
    monkeypatch.setenv("MLSERVICE_OIDC_NAME", "keycloak")
    monkeypatch.setenv("MLSERVICE_OIDC_CLIENT_ID", "mlservice")
    monkeypatch.setenv("MLSERVICE_OIDC_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("MLSERVICE_OIDC_SCOPES", "openid, email,groups")
    monkeypatch.setenv("MLSERVICE_OIDC_ADMIN_CLAIM", "groups")
    monkeypatch.setenv("MLSERVICE_OIDC_ADMIN_VALUE", "mlservice-admins")
    monkeypatch.setenv(
        "MLSERVICE_OIDC_PROVIDERS",
        json.dumps([{"name": "other", "issuer": "https://id.example.org", "client_id": "ml"}]),
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert list(settings.oidc) == ["keycloak", "other"]
    keycloak = settings.oidc["keycloak"]
    assert keycloak.scopes == ["openid", "email", "groups"]
    assert keycloak.client_secret is not None
    assert keycloak.client_secret.get_secret_value() == "s3cret"
    assert (keycloak.admin_claim, keycloak.admin_value) == ("groups", "mlservice-admins")
    assert keycloak.label == "keycloak"
    other = settings.oidc["other"]
    assert other.client_secret is None
    assert other.scopes == ["openid", "email", "profile"]


def test_no_provider_by_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.oidc == {}
    assert settings.password_login


def test_bad_provider_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, oidc_providers=[{"name": "Not A Slug", "issuer": "x", "client_id": "y"}])  # type: ignore[call-arg]
    twice = [{"name": "a", "issuer": "https://a", "client_id": "c"}] * 2
    with pytest.raises(ValueError, match="same name"):
        _ = Settings(_env_file=None, oidc_providers=twice).oidc  # type: ignore[call-arg]
