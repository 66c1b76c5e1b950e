"""Who may read ``/metrics``: the series name models, routes, error rates and queue depths, which
are nobody's business on a public address.

With ``MLSERVICE_METRICS_TOKEN`` set, a scraper sends ``Authorization: Bearer <token>``; without
it only connections from this machine are answered. The address is the connection's as the app
sees it: behind a trusted proxy it is the client's (see :mod:`mlservice.security.forwarded`), so
a request that came through nginx from outside is refused either way.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address

from mlservice.errors import AppError


class MetricsUnauthorized(AppError):
    status_code = 401
    code = "metrics_token_required"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer realm="metrics"'}


class MetricsForbidden(AppError):
    status_code = 403
    code = "metrics_forbidden"


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics_access(authorization: str | None, client_host: str | None, token: str | None) -> None:
    """Raise unless this request may read the metrics."""
    if token is None:
        if not _loopback(client_host):
            raise MetricsForbidden(
                "Metrics are served to this machine only; set MLSERVICE_METRICS_TOKEN for a scraper."
            )
        return
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise MetricsUnauthorized("Send the metrics token as `Authorization: Bearer <token>`.")
