"""Administrators' use cases: changing an account (role, sign-in) and deleting request history.

Each owns its unit of work, the one commit point of the operation; the JSON API and the admin pages
check who may call them (the admin role, and for deletions the admin token) and only translate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlservice.admin import service
from mlservice.history import service as history

if TYPE_CHECKING:
    import uuid
    from datetime import datetime

    from mlservice.admin.service import Account
    from mlservice.components import Components
    from mlservice.users.principals import Principal


async def update_account(
    components: Components,
    admin: Principal,
    user_id: uuid.UUID,
    *,
    is_superuser: bool | None,
    is_active: bool | None,
) -> Account:
    """Grant or take the admin role, activate or deactivate an account (``None``: unchanged).

    Never on ``admin``'s own account (``cannot_demote_self``, ``cannot_deactivate_self``), so an
    administrator always remains; an unknown id is ``user_not_found``.
    """
    async with components.db.session(write=True) as session:
        account = await service.update_account(
            session, admin.id, user_id, is_superuser=is_superuser, is_active=is_active
        )
    components.principals.forget_user(user_id)  # in this process at once (others: within seconds)
    return account


async def delete_history(components: Components, *, before: datetime | None) -> int:
    """Delete the request history (all of it, or what arrived before ``before``); how many went.

    Jobs, results and the ledger are kept. The caller has checked the admin token.
    """
    async with components.db.session(write=True) as session:
        return await history.delete_requests(session, before=before)
