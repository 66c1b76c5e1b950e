"""The administrators' pages: users and balances, credits, models and prices, request history,
statistics.

Server-rendered over the services the admin API uses; forms post here and are answered with a
redirect and a notice (post/redirect/get), or with the form again when what was typed is invalid.
Each page group has its own module and router; this package joins them into one ``router``.
"""

from __future__ import annotations

from fastapi import APIRouter

from mlservice.web.admin import credits, history, models, overview, stats, users

router = APIRouter()
# Routes match in the order they are added: the page groups keep the order they have always had.
router.include_router(overview.router)
router.include_router(users.router)
router.include_router(models.router)
router.include_router(history.router)
router.include_router(stats.router)
router.include_router(credits.router)

__all__ = ["router"]
