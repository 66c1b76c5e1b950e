"""The wallet's use cases: a top-up; an administrator's adjustment, grants and promotion codes.

Each owns its unit of work, the one commit point of the operation: the JSON API, the web pages and
the Telegram bot only translate their input into a call and the result into their answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlservice.idempotency import service as idempotency
from mlservice.wallet import alerts, breakdown, granting, grants, promotions, service
from mlservice.wallet.errors import InvalidTopUpAmount, RefillLimitExceeded
from mlservice.wallet.schemas import EntryRead, GrantRead, RefillResponse, WalletDetail, WalletRead
from mlservice.webhooks.destinations import check_url

if TYPE_CHECKING:
    import uuid
    from datetime import datetime

    from mlservice.components import Components
    from mlservice.idempotency.service import Outcome
    from mlservice.users.principals import Principal
    from mlservice.wallet.tables import CreditGrant, LedgerEntry, PromoCode, Wallet

# One scope and one fingerprint for every surface: a key a client sent to ``POST
# /api/wallet/refill`` and then again from a web form (or the bot) is the same top-up.
TOP_UP_SCOPE = "wallet.refill"


async def top_up(
    components: Components, user_id: uuid.UUID, amount: int, idempotency_key: str | None
) -> Outcome:
    """Add ``amount`` credits to the user's wallet (a demo payment: no money moves).

    The outcome's body is ``POST /api/wallet/refill``'s answer (:class:`RefillResponse`). With an
    ``idempotency_key`` seen before for this user, nothing is paid again and the first answer is
    replayed (``outcome.replayed``); the same key with another amount is refused
    (``idempotency_key_reused``), a malformed one too (``invalid_idempotency_key``). Without a key
    every call pays.
    """
    if amount < 1:
        raise InvalidTopUpAmount("A top-up adds at least 1 credit.")
    limit = components.settings.max_refill_amount
    if amount > limit:
        raise RefillLimitExceeded(f"A single top-up is limited to {limit} credits.")
    fingerprint = idempotency.request_fingerprint(amount=amount)
    async with components.db.session(write=True) as session:

        async def operation() -> tuple[int, dict[str, Any]]:
            entry = await service.top_up(session, user_id, amount)
            wallet = await service.get_wallet(session, user_id)
            result = RefillResponse(
                wallet=WalletRead.model_validate(wallet), entry=EntryRead.model_validate(entry)
            )
            return 200, result.model_dump(mode="json")

        # The key's row, the ledger entry and the stored answer commit together: a retry either
        # finds all three (and replays) or none (and pays).
        return await idempotency.run_once(
            session, user_id, TOP_UP_SCOPE, idempotency_key, fingerprint, operation
        )


@dataclass(frozen=True)
class Adjustment:
    """An administrator's correction as it was committed: the wallet after it, and its entry."""

    wallet: Wallet
    entry: LedgerEntry


async def adjust_balance(
    components: Components, admin: Principal, user_id: uuid.UUID, amount: int, note: str
) -> Adjustment:
    """Add (positive ``amount``) or take credits from a user's wallet, on an administrator's word.

    The ledger keeps ``note`` and who made the change. Taking more than the user could spend (the
    balance less the open holds) is refused (``adjustment_exceeds_available``); a user without a
    wallet is ``wallet_not_found``. The caller has checked that ``admin`` is an administrator.
    """
    async with components.db.session(write=True) as session:
        entry = await service.adjust(session, user_id, amount, f"{note} (by {admin.email})", by=admin.email)
        wallet = await service.get_wallet(session, user_id)
    return Adjustment(wallet, entry)


async def wallet_detail(components: Components, user_id: uuid.UUID) -> WalletDetail:
    """``GET /api/wallet``'s answer: the totals, credits by kind, what expires soon, the grants.

    A read, unless a grant of the user has expired with free credit still in it and no sweep took
    it yet: then that is removed first (under the wallet's lock), so available = paid + bonus.
    """
    at = grants.now()
    async with components.db.session() as session:
        due = await breakdown.has_due(session, user_id, at)
        if not due:
            return _detail(await breakdown.breakdown(session, user_id, at))
    async with components.db.session(write=True) as session:
        await service.expire(session, await service.lock_wallet(session, user_id), at)
        return _detail(await breakdown.breakdown(session, user_id, at))


def _detail(b: breakdown.Breakdown) -> WalletDetail:
    return WalletDetail(
        balance=b.wallet.balance,
        held=b.wallet.held,
        available=b.wallet.available,
        paid=b.paid,
        bonus=b.bonus,
        expiring=b.expiring,
        grants=[GrantRead.model_validate(g) for g in b.grants],
    )


async def expire_grants(components: Components, limit: int = 500) -> int:
    """The sweep's: remove the free credit of every grant that has expired (up to ``limit``
    grants); how many credits."""
    async with components.db.session(write=True) as session:
        return await service.expire_due(session, grants.now(), limit)


# A grant to everyone commits this many wallets at a time, so it never holds every wallet locked
# (each batch waits only for the spends of its own users), and lists only the first grants made.
GRANT_BATCH = 500
GRANTS_LISTED = 100


@dataclass(frozen=True)
class Granted:
    """How many grants were made, and the first of them (at most :data:`GRANTS_LISTED`)."""

    count: int
    grants: list[CreditGrant]


async def grant_credits(
    components: Components,
    admin: Principal,
    user_id: uuid.UUID | None,
    amount: int,
    note: str,
    *,
    expires_at: datetime | None = None,
    priority: int | None = None,
) -> Granted:
    """Bonus credits from an administrator, to one user (``user_id``) or to every active account
    (None), with an optional expiry and priority; each grant keeps who made it. The caller has
    checked that ``admin`` is an administrator.

    To everyone, it is one unit of work per batch of :data:`GRANT_BATCH` wallets, in user order:
    no transaction holds more wallets locked than that. It is not all or nothing: if the process
    dies (or the database fails) midway, the batches committed so far keep their grants and the
    rest get none; running it again would grant a second time to those already granted (their
    grants name the note and the administrator, so they can be found and voided).
    """
    by = admin.email
    if user_id is None:
        return await _grant_to_everyone(components, amount, note, by, expires_at, priority)
    async with components.db.session(write=True) as session:
        one = await granting.grant(
            session,
            user_id,
            amount,
            expires_at=expires_at,
            priority=priority,
            note=f"{note} (by {by})",
            by=by,
        )
        return Granted(1, [one])


async def _grant_to_everyone(
    components: Components,
    amount: int,
    note: str,
    by: str,
    expires_at: datetime | None,
    priority: int | None,
) -> Granted:
    count = 0
    listed: list[CreditGrant] = []
    after: uuid.UUID | None = None
    while True:
        async with components.db.session(write=True) as session:
            users = await granting.active_wallets(session, after, GRANT_BATCH)
            made = await granting.grant_to_each(
                session, users, amount, expires_at=expires_at, priority=priority, note=note, by=by
            )
        count += len(made)
        listed.extend(made[: GRANTS_LISTED - len(listed)])
        if len(users) < GRANT_BATCH:
            return Granted(count, listed)
        after = users[-1]


async def void_grant(components: Components, admin: Principal, grant_id: int) -> CreditGrant:
    """Take back an unspent grant (``grant_not_voidable`` once any of it was spent or is held)."""
    async with components.db.session(write=True) as session:
        return await granting.void(session, grant_id, admin.email)


async def create_promo_code(
    components: Components,
    admin: Principal,
    code: str,
    amount: int,
    max_uses: int,
    *,
    redeem_until: datetime | None,
    grant_days: int | None,
    priority: int,
) -> PromoCode:
    """A promotion code (``promo_code_taken`` if its text exists); it keeps who made it."""
    async with components.db.session(write=True) as session:
        return await promotions.create(
            session,
            code,
            amount,
            max_uses,
            redeem_until=redeem_until,
            grant_days=grant_days,
            priority=priority,
            by=admin.email,
        )


async def redeem_promo_code(
    components: Components, user_id: uuid.UUID, code: str
) -> tuple[Wallet, CreditGrant]:
    """The user redeems ``code``: its bonus grant and the wallet after it."""
    async with components.db.session(write=True) as session:
        made = await promotions.redeem(session, user_id, code)
        return await service.get_wallet(session, user_id), made


async def wallet_of(components: Components, user_id: uuid.UUID) -> Wallet:
    """The user's wallet as it is now (a read)."""
    async with components.db.session() as session:
        return await service.get_wallet(session, user_id)


async def alert_settings(components: Components, user_id: uuid.UUID) -> alerts.AlertView:
    """The user's low-balance alert settings and the latest alerts (a read)."""
    async with components.db.session() as session:
        return await alerts.view(session, user_id)


async def configure_alerts(
    components: Components,
    user_id: uuid.UUID,
    *,
    thresholds: list[int] | None,
    webhook_url: str | None,
    telegram: bool,
) -> alerts.AlertView:
    """Set how the user is told that credits run low: thresholds (None: the defaults, []: none), an
    account webhook for ``balance.low`` (checked as job webhooks are: ``invalid_webhook``) and
    Telegram on or off. Thresholds the available credits are below already are not announced."""
    url = webhook_url.strip() if webhook_url else None
    if url:
        url = check_url(url, allow_private=components.settings.webhook_allow_private)
    async with components.db.session(write=True) as session:
        await service.lock_wallet(session, user_id)
        await alerts.configure(
            session, user_id, custom=thresholds, webhook_url=url or None, telegram=telegram
        )
        return await alerts.view(session, user_id)
