"""The client's address and scheme, believed from X-Forwarded-* only when a trusted proxy sent them.

Behind nginx the peer of every request is nginx; the client is in ``X-Forwarded-For``. Anybody can
send that header, so it counts only when the peer is a configured proxy
(``MLSERVICE_FORWARDED_ALLOW_IPS``); then the ASGI scope's ``client`` and
``scheme`` (see :mod:`mlservice.edge`), and everything after (rate limits, HSTS, logs) sees the
real client.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.types import Scope

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_SCHEMES = {"http": {"http", "https"}, "websocket": {"ws", "wss"}}
_SECURE = {"https": "wss", "http": "ws"}


def parse_address(text: str) -> Address | None:
    """An IP address from a header entry (``[::1]:8080`` and ``1.2.3.4:5`` forms too), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        text = text.split(":", 1)[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


class TrustedProxies:
    """The peers allowed to speak for the client: addresses, networks, or ``*`` for any."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        self.any = "*" in entries
        self.networks: list[Network] = [ip_network(e, strict=False) for e in entries if e != "*"]

    def __contains__(self, address: object) -> bool:
        if self.any:
            return True
        if not isinstance(address, IPv4Address | IPv6Address):
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def client_from(self, peer: str, forwarded_for: str) -> str:
        """The client's address: the nearest hop in ``forwarded_for`` that is not a trusted proxy.

        Entries are read from the right, the one the nearest proxy added: only trusted proxies can
        vouch for the entry to their left, and anything further left may be made up by the client.
        """
        client = peer
        for entry in reversed(forwarded_for.split(",")):
            address = parse_address(entry)
            if address is None:
                break  # not an address: keep the last hop we could believe
            client = str(address)
            if address not in self:
                break
        return client


def rewrite_forwarded(scope: Scope, trusted: TrustedProxies) -> None:
    """Set ``scope["client"]`` and ``scope["scheme"]`` from X-Forwarded-For and X-Forwarded-Proto
    when the peer is a trusted proxy; leave them alone otherwise."""
    if scope["type"] not in _SCHEMES or not (trusted.networks or trusted.any):
        return
    client: tuple[str, int] | None = scope.get("client")
    if client is None or parse_address(client[0]) not in trusted:
        return
    forwarded_for = proto = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            # Several headers are one comma-separated list, in order.
            text = value.decode("latin-1")
            forwarded_for = f"{forwarded_for},{text}" if forwarded_for else text
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1")
    if forwarded_for:
        scope["client"] = (trusted.client_from(client[0], forwarded_for), 0)
    if proto:
        # The leftmost value is the scheme the client used with the first proxy.
        scheme = proto.split(",", 1)[0].strip().lower()
        if scope["type"] == "websocket":
            scheme = _SECURE.get(scheme, scheme)
        if scheme in _SCHEMES[scope["type"]]:
            scope["scheme"] = scheme
