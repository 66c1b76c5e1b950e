"""The writes of an accepted submit, in as few statements as each database allows.

A job is admitted when its owner's account is active, has fewer unfinished jobs than its cap (when
there is one: ``MLSERVICE_MAX_UNFINISHED_JOBS_PER_USER``) and the wallet can cover the price: the price
is held (``wallets.held``), and the job, its hold, the hold's ledger entry (with the totals it left)
and the accepted request's history row are written together. On PostgreSQL that is one statement,
a chain of data-modifying CTEs hanging off the guarded wallet UPDATE: nothing is written unless
that UPDATE matched, so a refusal writes nothing and costs no rollback. The guard is what makes
concurrent submits safe: the UPDATE locks the wallet row, and a submit that waited for another's
lock checks ``balance - held >= price`` again on the row that one left (READ COMMITTED re-checks
the updated row), so no two holds can spend the same credits; the table's checks refuse it too.
The cap on unfinished jobs is backpressure, not money: its count is of the statement's snapshot, so
submits of one user racing each other may pass it together (by at most as many as race).

A CTE rather than a server-side function: the statement lives next to the tables it writes, in
the code that reviews and tests read, changes without a migration (and without a schema version
that must match the code that calls it), and costs the same single round trip.

On SQLite (one writer, in-process) the same writes are five short statements in the caller's
transaction: the guarded UPDATE first, the inserts only if it matched.

Every statement here is built once: building them is a good part of what they cost in Python.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Table,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import AppError, NotFound
from mlservice.history.tables import PredictionRequest
from mlservice.jobs.errors import AccountInactive, TooManyUnfinishedJobs
from mlservice.jobs.tables import Job, JobStatus
from mlservice.users.tables import User
from mlservice.wallet import grants
from mlservice.wallet.errors import InsufficientCredits
from mlservice.wallet.tables import (
    CreditGrant,
    EntryType,
    GrantKind,
    GrantPosting,
    Hold,
    HoldStatus,
    LedgerEntry,
    Wallet,
)

_users, _wallets, _jobs, _holds, _ledger, _requests, _grants, _postings = (
    cast(Table, t.__table__)
    for t in (User, Wallet, Job, Hold, LedgerEntry, PredictionRequest, CreditGrant, GrantPosting)
)

# The parameters every statement below takes (``b_``: a bind name may not be a column's name).
# Job: b_job_id, b_user_id, b_price, b_now, b_model_slug, b_params, b_input_meta, b_input_file,
# b_input_text, b_request_id, b_webhook_url, b_webhook_events, b_webhook_flavour, b_cancel_at. History row:
# b_received_at, b_requested_slug, b_input_bytes, b_image_width, b_image_height, b_record_request_id.
_price = bindparam("b_price", type_=BigInteger)
_user_id = bindparam("b_user_id", type_=_wallets.c.user_id.type)
_job_id = bindparam("b_job_id", type_=_jobs.c.id.type)
_now = bindparam("b_now", type_=_jobs.c.created_at.type)

_active = exists().where(_users.c.id == _user_id, _users.c.is_active.is_(true()))
# The user's unfinished jobs, counted up to the cap only (the partial index ix_jobs_unfinished
# holds just these rows): what it costs does not grow with a user's history or a long queue.
_cap = bindparam("b_unfinished_cap", type_=BigInteger)
UNFINISHED = (JobStatus.queued.value, JobStatus.running.value)
_unfinished = (
    select(func.count())
    .select_from(
        select(_jobs.c.id)
        .where(_jobs.c.user_id == _user_id, _jobs.c.status.in_(UNFINISHED))
        .limit(_cap)
        .subquery()
    )
    .scalar_subquery()
)


def _hold_price(capped: bool, covered: Any = None) -> Any:
    guards = [_wallets.c.user_id == _user_id, _wallets.c.balance - _wallets.c.held >= _price, _active]
    if capped:
        guards.append(_unfinished < _cap)
    if covered is not None:
        guards.append(covered)
    return (
        update(_wallets)
        .where(*guards)
        .values(held=_wallets.c.held + _price, updated_at=_now)
        .returning(_wallets.c.user_id, _wallets.c.balance, _wallets.c.held)
    )


_JOB_VALUES: dict[str, Any] = {
    "id": _job_id,
    "user_id": _user_id,
    "model_slug": bindparam("b_model_slug", type_=_jobs.c.model_slug.type),
    "status": literal(JobStatus.queued.value, _jobs.c.status.type),
    "cost": _price,
    "params": bindparam("b_params", type_=_jobs.c.params.type),
    "input_meta": bindparam("b_input_meta", type_=_jobs.c.input_meta.type),
    "input_file": bindparam("b_input_file", type_=_jobs.c.input_file.type),
    "input_text": bindparam("b_input_text", type_=_jobs.c.input_text.type),
    "artifacts": literal({}, _jobs.c.artifacts.type),
    "attempts": literal(0, _jobs.c.attempts.type),
    "created_at": _now,
    "request_id": bindparam("b_request_id", type_=_jobs.c.request_id.type),
    "webhook_url": bindparam("b_webhook_url", type_=_jobs.c.webhook_url.type),
    "webhook_events": bindparam("b_webhook_events", type_=_jobs.c.webhook_events.type),
    "webhook_flavour": bindparam("b_webhook_flavour", type_=_jobs.c.webhook_flavour.type),
    "cancel_at": bindparam("b_cancel_at", type_=_jobs.c.cancel_at.type),
}
_HOLD_VALUES: dict[str, Any] = {
    "user_id": _user_id,
    "job_id": _job_id,
    "amount": _price,
    "status": literal(HoldStatus.open.value, _holds.c.status.type),
    "created_at": _now,
}
_REQUEST_VALUES: dict[str, Any] = {
    "created_at": bindparam("b_received_at", type_=_requests.c.created_at.type),
    "user_id": _user_id,
    "model_slug": bindparam("b_requested_slug", type_=_requests.c.model_slug.type),
    "http_status": literal(201, _requests.c.http_status.type),
    "error_code": null(),
    "input_bytes": bindparam("b_input_bytes", type_=_requests.c.input_bytes.type),
    "image_width": bindparam("b_image_width", type_=_requests.c.image_width.type),
    "image_height": bindparam("b_image_height", type_=_requests.c.image_height.type),
    "request_id": bindparam("b_record_request_id", type_=_requests.c.request_id.type),
    "job_id": _job_id,
    "replayed": literal(False, _requests.c.replayed.type),
}


def _ledger_values(balance_after: Any, held_after: Any) -> dict[str, Any]:
    return {
        "user_id": _user_id,
        "type": literal(EntryType.hold.value, _ledger.c.type.type),
        "amount": literal(0, _ledger.c.amount.type),
        "held_delta": _price,
        "balance_after": balance_after,
        "held_after": held_after,
        "job_id": _job_id,
        "note": null(),
        "created_at": _now,
    }


def _insert_from(table: Table, source: Any, values: dict[str, Any]) -> Any:
    """``INSERT INTO table (...) SELECT ... FROM source``: a row only if ``source`` has one."""
    return insert(table).from_select(list(values), select(*values.values()).select_from(source))


# The grants a submit draws on (PostgreSQL). The wallet row is locked first (``locked_wallet``, an
# InitPlan of the grants' scan, so it runs before any grant is read); then the user's grants with
# free, unexpired credit are locked. FOR UPDATE returns each grant as it is now, not as the
# statement's snapshot saw it: a grant another submit drew on while this one waited for the wallet
# shows that draw. A grant created meanwhile is not seen (nor one whose credit came back
# meanwhile): the draws then fall short, the guard on the wallet refuses, nothing is written, and the
# caller's second try (a new statement, a new snapshot) sees it.
_grants_now = bindparam("b_grants_now", type_=_grants.c.expires_at.type)


def _draws() -> Any:
    locked_wallet = (
        select(_wallets.c.user_id)
        .where(_wallets.c.user_id == _user_id)
        .with_for_update()
        .cte("locked_wallet")
    )
    locked = (
        select(
            _grants.c.id,
            _grants.c.priority,
            _grants.c.expires_at,
            _grants.c.kind,
            (_grants.c.remaining - _grants.c.held).label("free"),
        )
        .where(
            _grants.c.user_id == select(locked_wallet.c.user_id).scalar_subquery(),
            _grants.c.remaining > 0,
            _grants.c.remaining > _grants.c.held,
            grants.unexpired_filter(_grants_now),
        )
        .with_for_update()
        .cte("locked_grants")
    )
    # The spending order of grants.spending_key: priority, earliest expiry, bonus before paid, oldest.
    order = (
        locked.c.priority,
        locked.c.expires_at.asc().nulls_last(),
        case((locked.c.kind == GrantKind.bonus.value, 0), else_=1),
        locked.c.id,
    )
    ranked = select(
        locked.c.id,
        locked.c.free,
        func.sum(locked.c.free).over(order_by=order, rows=(None, 0)).label("upto"),
    ).subquery("ranked")
    before = ranked.c.upto - ranked.c.free
    return (
        select(ranked.c.id, func.least(ranked.c.free, _price - before).label("draw"))
        .where(before < _price)
        .cte("draws")
    )


def _admit_in_one_statement(capped: bool) -> Any:
    draws = _draws()
    covered = select(func.coalesce(func.sum(draws.c.draw), 0)).scalar_subquery() == _price
    held = _hold_price(capped, covered).cte("held")
    job = _insert_from(_jobs, held, _JOB_VALUES).returning(_jobs.c.id).cte("job")
    hold = _insert_from(_holds, held, _HOLD_VALUES).cte("hold")
    entry = (
        _insert_from(_ledger, held, _ledger_values(held.c.balance, held.c.held))
        .returning(_ledger.c.id)
        .cte("entry")
    )
    request = _insert_from(_requests, held, _REQUEST_VALUES).cte("request")
    # Only once the entry is written (i.e. the wallet's guard passed): the draws move their grants'
    # held credit, and each is a posting of the hold's entry.
    moved = (
        update(_grants)
        .where(_grants.c.id == draws.c.id, select(entry.c.id).exists())
        .values(held=_grants.c.held + draws.c.draw)
        .cte("moved")
    )
    posted = (
        insert(_postings)
        .from_select(
            ["entry_id", "grant_id", "job_id", "amount", "held_delta"],
            select(entry.c.id, draws.c.id, _job_id, literal(0, BigInteger), draws.c.draw).select_from(
                entry.join(draws, true())
            ),
        )
        .cte("posted")
    )
    # Unreferenced data-modifying CTEs run all the same (exactly once, to completion).
    return select(job.c.id).add_cte(hold, entry, request, moved, posted)


# [without a cap on unfinished jobs, with one]
_ADMIT = (_admit_in_one_statement(False), _admit_in_one_statement(True))
_HOLD_PRICE = (_hold_price(False), _hold_price(True))
# SQLite: the same writes one by one, in the caller's transaction.
_INSERT_JOB = insert(_jobs).values(_JOB_VALUES)
_INSERT_HOLD = insert(_holds).values(_HOLD_VALUES)
_INSERT_ENTRY = (
    insert(_ledger)
    .values(
        _ledger_values(
            bindparam("b_balance_after", type_=BigInteger), bindparam("b_held_after", type_=BigInteger)
        )
    )
    .returning(_ledger.c.id)
)
_INSERT_REQUEST = insert(_requests).values(_REQUEST_VALUES)

# What the account looks like when a submit was refused: why it was.
_spendable = (
    select(func.coalesce(func.sum(_grants.c.remaining - _grants.c.held), 0))
    .where(_grants.c.user_id == _user_id, _grants.c.remaining > 0, grants.unexpired_filter(_grants_now))
    .scalar_subquery()
)
_STANDING = (
    select(
        _users.c.is_active,
        _wallets.c.balance,
        _wallets.c.held,
        _unfinished.label("unfinished"),
        _spendable.label("spendable"),
    )
    .select_from(_users.outerjoin(_wallets, _wallets.c.user_id == _users.c.id))
    .where(_users.c.id == _user_id)
)


async def admit(session: AsyncSession, values: dict[str, Any], unfinished_cap: int = 0) -> bool:
    """Hold the price and write the job, its hold, ledger entry and history row; False (and
    nothing written) when the account is inactive, has ``unfinished_cap`` unfinished jobs already
    (0: no cap) or cannot cover the price."""
    connection = await session.connection()
    capped = unfinished_cap > 0
    if capped:
        values = {**values, "b_unfinished_cap": unfinished_cap}
    if connection.dialect.name != "sqlite":
        return (await connection.execute(_ADMIT[capped], values)).first() is not None
    # SQLite has one writer: the grants read here stay as they are until this commits.
    price = values["b_price"]
    draws = grants.plan(await grants.live(connection, values["b_user_id"]), price, values["b_grants_now"])
    if sum(n for _, n in draws) < price:
        return False
    totals = (await connection.execute(_HOLD_PRICE[capped], values)).first()
    if totals is None:
        return False
    await connection.execute(_INSERT_JOB, values)
    await connection.execute(_INSERT_HOLD, values)
    entry = await connection.execute(
        _INSERT_ENTRY, {**values, "b_balance_after": totals.balance, "b_held_after": totals.held}
    )
    moves = [grants.Move(g, 0, n) for g, n in draws]
    await grants.post(connection, entry.scalar_one(), moves, values["b_job_id"])
    await connection.execute(_INSERT_REQUEST, values)
    return True


async def refusal(
    session: AsyncSession,
    user_id: uuid.UUID,
    price: int,
    unfinished_cap: int = 0,
    grants_now: datetime | None = None,
) -> AppError | None:
    """Why :func:`admit` refused, as the error to answer with; None if the account, read again
    now, could pay (it changed in between: the caller may try once more)."""
    connection = await session.connection()
    if grants_now is None:
        grants_now = grants.now()
    # Without a cap, the count stops at one row: it decides nothing then.
    params = {"b_user_id": user_id, "b_unfinished_cap": max(unfinished_cap, 1), "b_grants_now": grants_now}
    standing = (await connection.execute(_STANDING, params)).first()
    if standing is None:
        return AccountInactive("This account no longer exists.")
    if not standing.is_active:
        return AccountInactive("This account is deactivated.")
    if standing.balance is None:
        return NotFound("Wallet not found.", code="wallet_not_found")
    if unfinished_cap > 0 and standing.unfinished >= unfinished_cap:
        return TooManyUnfinishedJobs(
            f"You have {unfinished_cap} unfinished jobs, the most one account may have; submit "
            "again when some of them have finished.",
            limit=unfinished_cap,
        )
    # Credit of a grant that expired and is not swept yet is in the balance but cannot be spent.
    available = min(standing.balance - standing.held, standing.spendable)
    if price > available:
        return InsufficientCredits(
            f"This run costs {price} credits; {available} available. Top up your wallet.",
            price=price,
            available=available,
        )
    return None
