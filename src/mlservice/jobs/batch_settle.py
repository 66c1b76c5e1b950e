"""Settling a batch's plain successes together: the worker's hot path.

A plain success is a job whose model returned a result without artifacts and whose model has no
hook (:mod:`mlservice.jobs.hooks`). For each one this does what ``record_outcome`` and
``capture_hold`` do for one job (:mod:`mlservice.jobs.settle`, :mod:`mlservice.wallet.service`):
the result is written only while the attempt still owns the job (``running`` with that attempt
number), its hold is captured exactly once (the guarded UPDATE of the hold), the wallet's running
totals move and a capture entry records the totals it produced, and the job is announced
finished. A job whose attempt lost its claim changes nothing: it is neither written nor charged.

Each capture also charges exactly the grants its hold drew on (the hold's postings), with a posting
of the capture's entry per grant (see :mod:`mlservice.wallet.grants`). The wallets whose available
credits dropped below their next low-balance threshold come back with the result, for the caller to
review (:mod:`mlservice.wallet.alerts`): the comparison is part of the statement.

On PostgreSQL the whole batch is one statement (:data:`_SETTLE_PG`): one round trip whatever the
batch size (and, run on its own, no BEGIN or COMMIT either), its NOTIFY delivered when it commits.
The wallets are moved once per user by the sum of that user's captures, and each user's entries
carry the running totals (a window over the user's captured holds, in hold order), as if the
captures had been posted one by one. On SQLite (one writer at a time, no data-modifying CTEs) the
same work is a handful of Core statements in the caller's transaction, whatever the batch size.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import BigInteger, Table, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mlservice.db import DriverStatement
from mlservice.jobs.events import CHANNEL, IDS_PER_PAYLOAD
from mlservice.jobs.tables import Job, JobStatus
from mlservice.wallet import grants
from mlservice.wallet.tables import EntryType, GrantPosting, Hold, HoldStatus, LedgerEntry, Wallet


@dataclass(frozen=True)
class Settled:
    """What settling a batch did: the jobs recorded, and the users whose wallets need a look for
    a low-balance alert (their available credits dropped below the next threshold)."""

    recorded: set[uuid.UUID]
    low: set[uuid.UUID]


NOTHING = Settled(set(), set())


@dataclass(frozen=True)
class Success:
    """A plain success to record: the attempt that produced it and what the model returned."""

    job_id: uuid.UUID
    attempt: int
    output: dict[str, Any]
    processing_ms: float | None


async def settle_successes(
    connection: AsyncConnection, successes: Sequence[Success], now: datetime
) -> Settled:
    """Record ``successes`` whose attempt still owns its job and capture their holds, in the unit
    of work of ``connection``; returns the ids recorded (the others lost their claim and changed
    nothing) and the wallets to look at for an alert.

    On PostgreSQL the statement also notifies the listeners of finished jobs (at the commit);
    waking this process's own waiters, after the commit, is the caller's
    (:func:`~mlservice.jobs.events.announce_committed`).
    """
    if not successes:
        return NOTHING
    if connection.dialect.name == "postgresql":
        return _settled(list(await connection.execute(_SETTLE_PG, _pg_params(successes, now))))
    return await _settle_sqlite(connection, successes, now)


async def settle_successes_alone(
    connection: asyncpg.Connection, successes: Sequence[Success], now: datetime
) -> Settled:
    """PostgreSQL: :func:`settle_successes` as a statement of its own on a driver connection
    (:meth:`~mlservice.db.Database.driver`), committed when it returns."""
    if not successes:
        return NOTHING
    return _settled(
        [tuple(row) for row in await _SETTLE_PG_ALONE.fetch(connection, _pg_params(successes, now))]
    )


def _settled(rows: Sequence[Any]) -> Settled:
    # Every row carries the same list of wallets to look at (one sub-select).
    return Settled({row[0] for row in rows}, set(rows[0][2] or ()) if rows else set())


def _pg_params(successes: Sequence[Success], now: datetime) -> dict[str, Any]:
    return {
        "ids": [s.job_id for s in successes],
        "attempts": [s.attempt for s in successes],
        "outputs": [json.dumps(s.output) for s in successes],
        "processing_ms": [s.processing_ms for s in successes],
        "now": now,
    }


# -- PostgreSQL: one statement --------------------------------------------------------------------

# Wallets are locked in user order (``locked``) before any is moved: two batches settling jobs of
# the same users cannot deadlock. The jobs and holds a batch writes are its own (its claims).
_SETTLE_PG = text(
    f"""
WITH input AS (
    SELECT * FROM unnest(
        CAST(:ids AS uuid[]), CAST(:attempts AS integer[]),
        CAST(:outputs AS text[]), CAST(:processing_ms AS double precision[])
    ) AS input (id, attempt, output, processing_ms)
), done AS (
    UPDATE jobs
    SET status = '{JobStatus.succeeded}', output = CAST(input.output AS json),
        artifacts = CAST('{{}}' AS json), processing_ms = input.processing_ms,
        finished_at = CAST(:now AS timestamptz), lease_expires_at = NULL
    FROM input
    WHERE jobs.id = input.id AND jobs.status = '{JobStatus.running}' AND jobs.attempts = input.attempt
    RETURNING jobs.id
), captured AS (
    UPDATE holds SET status = '{HoldStatus.captured}', resolved_at = CAST(:now AS timestamptz)
    FROM done
    WHERE holds.job_id = done.id AND holds.status = '{HoldStatus.open}'
    RETURNING holds.id, holds.job_id, holds.user_id, holds.amount
), totals AS (
    SELECT user_id, CAST(sum(amount) AS bigint) AS amount FROM captured GROUP BY user_id
), locked AS (
    SELECT wallets.user_id FROM wallets
    WHERE wallets.user_id IN (SELECT user_id FROM totals)
    ORDER BY wallets.user_id
    FOR UPDATE
), moved AS (
    UPDATE wallets
    SET balance = wallets.balance - totals.amount, held = wallets.held - totals.amount,
        updated_at = CAST(:now AS timestamptz)
    FROM totals JOIN locked ON locked.user_id = totals.user_id
    WHERE wallets.user_id = totals.user_id
    RETURNING wallets.user_id,
        wallets.balance + totals.amount AS balance_before, wallets.held + totals.amount AS held_before,
        -- Below the next low-balance threshold, or that is not known yet: to be looked at.
        wallets.balance - wallets.held < coalesce(wallets.low_balance_below, {2**63 - 1}) AS low
), entries AS (
    INSERT INTO ledger_entries
        (user_id, type, amount, held_delta, balance_after, held_after, job_id, note, created_at)
    SELECT captured.user_id, '{EntryType.capture}', -captured.amount, -captured.amount,
        moved.balance_before - CAST(sum(captured.amount) OVER running AS bigint),
        moved.held_before - CAST(sum(captured.amount) OVER running AS bigint),
        captured.job_id, NULL, CAST(:now AS timestamptz)
    FROM captured JOIN moved ON moved.user_id = captured.user_id
    WINDOW running AS (PARTITION BY captured.user_id ORDER BY captured.id ROWS UNBOUNDED PRECEDING)
    -- Entry ids in the order of the running totals.
    ORDER BY captured.user_id, captured.id
    RETURNING ledger_entries.id, ledger_entries.job_id
), drawn AS (
    -- What each hold still has on each grant (its draws), for the wallets moved above: joined to
    -- ``moved`` so that a user's grants change only once that user's wallet is locked.
    SELECT grant_postings.grant_id, grant_postings.job_id,
        CAST(sum(grant_postings.held_delta) AS bigint) AS amount
    FROM grant_postings
    JOIN captured ON captured.job_id = grant_postings.job_id
    JOIN moved ON moved.user_id = captured.user_id
    GROUP BY grant_postings.grant_id, grant_postings.job_id
    HAVING sum(grant_postings.held_delta) > 0
), charged AS (
    UPDATE credit_grants
    SET remaining = credit_grants.remaining - per_grant.amount, held = credit_grants.held - per_grant.amount
    FROM (SELECT grant_id, sum(amount) AS amount FROM drawn GROUP BY grant_id) AS per_grant
    WHERE credit_grants.id = per_grant.grant_id
), posted AS (
    INSERT INTO grant_postings (entry_id, grant_id, job_id, amount, held_delta)
    SELECT entries.id, drawn.grant_id, drawn.job_id, -drawn.amount, -drawn.amount
    FROM drawn JOIN entries ON entries.job_id = drawn.job_id
), notified AS (
    SELECT pg_notify('{CHANNEL}', string_agg(CAST(id AS text), ','))
    FROM (SELECT id, (row_number() OVER () - 1) / {IDS_PER_PAYLOAD} AS payload FROM done) AS numbered
    GROUP BY payload
)
-- The sub-selects run once, and only if some job was settled: no empty notification.
SELECT done.id, (SELECT count(*) FROM notified) AS notifications,
    (SELECT array_agg(user_id) FROM moved WHERE low) AS low_users
FROM done
"""
)
_SETTLE_PG_ALONE = DriverStatement(_SETTLE_PG)


# -- SQLite: a few statements in the caller's transaction -----------------------------------------

_jobs, _holds, _wallets, _ledger, _postings = (
    cast(Table, t.__table__) for t in (Job, Hold, Wallet, LedgerEntry, GrantPosting)
)

_RUNNING = select(_jobs.c.id, _jobs.c.attempts).where(
    _jobs.c.id.in_(bindparam("ids", expanding=True)), _jobs.c.status == JobStatus.running
)
_SUCCEED = (
    update(_jobs)
    .where(
        _jobs.c.id == bindparam("b_job_id"),
        _jobs.c.status == JobStatus.running,
        _jobs.c.attempts == bindparam("b_attempt"),
    )
    .values(
        status=JobStatus.succeeded,
        output=bindparam("b_output"),
        artifacts={},
        processing_ms=bindparam("b_processing_ms"),
        finished_at=bindparam("now"),
        lease_expires_at=None,
    )
)
_CAPTURE = (
    update(_holds)
    .where(_holds.c.job_id.in_(bindparam("job_ids", expanding=True)), _holds.c.status == HoldStatus.open)
    .values(status=HoldStatus.captured, resolved_at=bindparam("now"))
    .returning(_holds.c.id, _holds.c.job_id, _holds.c.user_id, _holds.c.amount)
)
_TOTALS = select(_wallets.c.user_id, _wallets.c.balance, _wallets.c.held, _wallets.c.low_balance_below).where(
    _wallets.c.user_id.in_(bindparam("user_ids", expanding=True))
)
_DEBIT = (
    update(_wallets)
    .where(_wallets.c.user_id == bindparam("b_user_id"))
    .values(
        balance=_wallets.c.balance - bindparam("amount", type_=BigInteger),
        held=_wallets.c.held - bindparam("amount", type_=BigInteger),
        updated_at=bindparam("now"),
    )
)
_ENTRY = insert(_ledger).returning(_ledger.c.id, _ledger.c.job_id, sort_by_parameter_order=True)
_DRAWN = (
    select(_postings.c.grant_id, _postings.c.job_id, func.sum(_postings.c.held_delta))
    .where(_postings.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .group_by(_postings.c.grant_id, _postings.c.job_id)
)


async def _settle_sqlite(connection: AsyncConnection, successes: Sequence[Success], now: datetime) -> Settled:
    # The transaction holds SQLite's write lock: what these reads see stays true until it commits.
    by_id = {s.job_id: s for s in successes}
    running = await connection.execute(_RUNNING, {"ids": list(by_id)})
    owned = [by_id[job_id] for job_id, attempts in running if attempts == by_id[job_id].attempt]
    if not owned:
        return NOTHING
    await connection.execute(
        _SUCCEED,
        [
            {
                "b_job_id": s.job_id,
                "b_attempt": s.attempt,
                "b_output": s.output,
                "b_processing_ms": s.processing_ms,
                "now": now,
            }
            for s in owned
        ],
    )
    captured = sorted(
        (await connection.execute(_CAPTURE, {"job_ids": [s.job_id for s in owned], "now": now})).all(),
        key=lambda hold: (hold.user_id, hold.id),
    )
    low: set[uuid.UUID] = set()
    if captured:
        users = sorted({hold.user_id for hold in captured})
        totals, below = {}, {}
        for user_id, balance, held, next_threshold in await connection.execute(_TOTALS, {"user_ids": users}):
            totals[user_id], below[user_id] = (balance, held), next_threshold
        entries: list[dict[str, Any]] = []
        charged = dict.fromkeys(users, 0)
        for hold in captured:
            balance, held = totals[hold.user_id]
            totals[hold.user_id] = balance, held = balance - hold.amount, held - hold.amount
            charged[hold.user_id] += hold.amount
            entries.append(
                {
                    "user_id": hold.user_id,
                    "type": EntryType.capture,
                    "amount": -hold.amount,
                    "held_delta": -hold.amount,
                    "balance_after": balance,
                    "held_after": held,
                    "job_id": hold.job_id,
                    "note": None,
                    "created_at": now,
                }
            )
        await connection.execute(
            _DEBIT, [{"b_user_id": user, "amount": amount, "now": now} for user, amount in charged.items()]
        )
        for user_id, (balance, held) in totals.items():
            if below[user_id] is None or balance - held < below[user_id]:
                low.add(user_id)
        entry_ids = {job_id: entry_id for entry_id, job_id in await connection.execute(_ENTRY, entries)}
        drawn = await connection.execute(_DRAWN, {"job_ids": [hold.job_id for hold in captured]})
        await grants.post_many(
            connection,
            [
                (entry_ids[job_id], job_id, grants.Move(grant_id, -amount, -amount))
                for grant_id, job_id, amount in drawn
                if amount > 0
            ],
        )
    return Settled({s.job_id for s in owned}, low)
