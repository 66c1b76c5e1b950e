"""Hardening: rate limits, security headers, proxy headers, request body limits, strict JWTs.

:func:`mlservice.security.install.install_edge` puts the middleware on the app; the rate limit
dependencies are in :mod:`mlservice.security.limits`. This package's ``__init__`` imports
nothing, as the settings import :mod:`mlservice.security.rates`.
"""
