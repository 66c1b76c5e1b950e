"""Administrators' use cases: changing an account (role, sign-in), refunding a job's charge and
deleting request history.

Each owns its unit of work, the one commit point of the operation; the JSON API and the admin pages
check who may call them (the admin role, and for deletions the admin token) and only translate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from mlservice.admin import service
from mlservice.history import service as history
from mlservice.jobs.errors import JobNotFound
from mlservice.jobs.tables import Job
from mlservice.wallet import service as wallet_service
from mlservice.wallet.errors import JobNotRefundable
from mlservice.wallet.tables import EntryType, LedgerEntry

if TYPE_CHECKING:
    import uuid
    from datetime import datetime

    from mlservice.admin.service import Account
    from mlservice.components import Components
    from mlservice.users.principals import Principal
    from mlservice.wallet.tables import Wallet


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


@dataclass(frozen=True)
class Refund:
    """A job's charge given back, as it was committed: the wallet after it, and its entry."""

    wallet: Wallet
    entry: LedgerEntry


async def refund_job(components: Components, admin: Principal, job_id: uuid.UUID, note: str | None) -> Refund:
    """Give the credits a job was charged back to the grants they came from, exactly once.

    The ledger entry says which job, which administrator and ``note``. An unknown job is
    ``job_not_found``; one whose charge is not captured (never charged, failed, still running,
    refunded already) is ``not_refundable``. The caller has checked that ``admin`` is an
    administrator.
    """
    said = f"Refund of job {job_id} by {admin.email}" + (f": {note}" if note else "")
    async with components.db.session(write=True) as session:
        if await session.get(Job, job_id) is None:
            raise JobNotFound("There is no job with this id.")
        done = await wallet_service.refund(session, job_id, note=said[:500])
        if done is None:
            raise JobNotRefundable(
                "Only a job that was charged, and not refunded yet, can be refunded.", job_id=str(job_id)
            )
        entry = await session.scalar(
            select(LedgerEntry)
            .where(LedgerEntry.job_id == job_id, LedgerEntry.type == EntryType.refund)
            .order_by(LedgerEntry.id.desc())
            .limit(1)
        )
        assert entry is not None  # refund() has just written it
        return Refund(await wallet_service.get_wallet(session, done.user_id), entry)
