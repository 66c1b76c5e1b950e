"""Where webhooks may be sent: the URL a job names, checked when it is submitted, and the address
its host resolves to, checked again right before every attempt.

The policy: absolute ``http``/``https`` URLs of at most 2000 characters, without credentials in
them. Unless ``MLSERVICE_WEBHOOK_ALLOW_PRIVATE`` is set, the destination must be a public address:
loopback, private, link-local (cloud metadata endpoints live there), shared, reserved,
multicast and unspecified addresses are refused, so that a webhook cannot be used to make the
service send requests into its own network. A host name is not resolved at submit (its records
may change); the deliverer resolves it before each attempt, refuses it if any of its addresses
is not allowed, and connects to the address it checked, never to a second lookup's answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from mlservice.errors import AppError

MAX_URL_LENGTH = 2000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to; the event loop's getaddrinfo by default.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class InvalidWebhook(AppError):
    status_code = 422
    code = "invalid_webhook"


class DestinationRefused(Exception):
    """The destination is not one webhooks may be sent to (not worth retrying)."""


def check_url(url: str, *, allow_private: bool) -> str:
    """The webhook URL if it may be used, else :class:`InvalidWebhook` (422) saying why."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"`webhook` is limited to {MAX_URL_LENGTH} characters.")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidWebhook("`webhook` must not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)  # what the deliverer will parse it with (host names in IDNA, say)
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidWebhook(f"`webhook` is not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhook("`webhook` must be an absolute http:// or https:// URL.")
    if "@" in parts.netloc:
        raise InvalidWebhook("`webhook` must not contain a user name or password.")
    if port == 0:
        raise InvalidWebhook("`webhook` names port 0.")
    if not allow_private:
        host = parts.hostname
        if host == "localhost" or host.endswith(".localhost"):
            raise InvalidWebhook("`webhook` must point to a public address, not to localhost.")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None  # a name: resolved and checked before every delivery
        if literal is not None and (reason := refusal(literal)) is not None:
            raise InvalidWebhook(f"`webhook` must point to a public address; {host} is {reason}.")
    return url


def refusal(address: IPAddress) -> str | None:
    """Why webhooks may not go to ``address`` when private destinations are not allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for reason, flag in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("an unspecified address", address.is_unspecified),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
    ):
        if flag:
            return reason
    if not address.is_global:  # e.g. 100.64.0.0/10, shared by carriers
        return "not a public address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_destination(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolver
) -> str:
    """The address to connect to for ``host``. Raises :class:`DestinationRefused` when the policy
    forbids it and ``OSError`` when the name does not resolve (worth retrying)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        found = await resolver(host, port)
        if not found:
            raise OSError(f"{host} has no address")
        # A zone index (fe80::1%eth0) is not part of the address.
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
    if not allow_private:
        for address in addresses:
            # Every address must pass: a name with one public and one private record is refused,
            # whichever of them a connection would have used.
            if (reason := refusal(address)) is not None:
                raise DestinationRefused(f"{host} resolves to {address}, {reason}")
    return str(addresses[0])
