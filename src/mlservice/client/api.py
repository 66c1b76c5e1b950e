"""A small synchronous wrapper of the service's HTTP API, turning every failure into a
:class:`ClientError` that says what went wrong in words."""

from __future__ import annotations

from typing import Any

import httpx

from mlservice.client.errors import ApiError, ClientError

# Failed connection attempts are retried (nothing reached the server, so nothing is done twice).
CONNECT_RETRIES = 2
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def _hint(status: int, code: str) -> str:
    if status == 401:
        return " Run `mlservice login` (or set MLSERVICE_API_KEY) to use a valid key."
    if status == 402:
        return " `mlservice balance` shows your credits."
    if code == "model_not_found":
        return " `mlservice models` lists the models."
    return ""


def error_from(response: httpx.Response) -> ApiError:
    """The server's error in words: its ``{"error": {"code", "message"}}`` body when it has one."""
    code, message = f"http_{response.status_code}", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or code)
        message = str(body["error"].get("message") or "")
    if response.status_code == 401:
        message = "The server refused the API key (unknown, revoked, or its account is inactive)."
    elif not message:
        message = f"The server answered {response.status_code} {response.reason_phrase}."
    retry_after = response.headers.get("Retry-After")
    if response.status_code == 429 and retry_after and "seconds" not in message:
        message += f" Retry in {retry_after} s."
    return ApiError(message + _hint(response.status_code, code), status=response.status_code, code=code)


class Api:
    """The API of one server (``url`` without ``/api``), with an API key or a login token."""

    def __init__(
        self, url: str, token: str | None = None, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url
        headers = {"User-Agent": "mlservice-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=f"{url}/api",
            headers=headers,
            timeout=TIMEOUT,
            transport=transport or httpx.HTTPTransport(retries=CONNECT_RETRIES),
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ClientError(
                f"Cannot reach the server at {self.url} ({exc}). Is it running? "
                "Set another one with MLSERVICE_URL or `mlservice login --url URL`."
            ) from None
        except httpx.TimeoutException:
            raise ClientError(f"The server at {self.url} did not answer in time.") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"The request to {self.url} failed: {exc}") from None
        if response.is_error:
            raise error_from(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.url} answered {path} with something other than JSON; is it an mlservice server?"
            ) from None
