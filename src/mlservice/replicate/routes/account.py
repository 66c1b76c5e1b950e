"""``/v1/account``: who a token belongs to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlservice.replicate.problems import ReplicateRoute, problems
from mlservice.replicate.routes.dependencies import ApiUser

router = APIRouter(tags=["replicate"], route_class=ReplicateRoute, responses=problems(401, 422))


@router.get("/account")
async def get_account(user: ApiUser) -> dict[str, Any]:
    """Who the token belongs to (Replicate's clients use it to check a token)."""
    return {"type": "user", "username": user.email, "name": user.email, "github_url": None}
