"""The deliverer: a background task in every API and worker process that sends the outbox.

It claims due deliveries in one guarded UPDATE that counts the attempt and pushes
``next_attempt_at`` past the attempt's longest possible duration (a lease: if the process dies
mid-send, another one retries after it). On PostgreSQL the claim skips rows another process is
claiming (``FOR UPDATE SKIP LOCKED``); SQLite has one writer. A delivery is due only when no
earlier delivery of the same job is still pending, so a job's events arrive in order, each
waiting for the previous one to be delivered or given up.

Each claimed delivery is sent in a task of its own (a hanging receiver holds up only its own
deliveries) and its result written in a short transaction of its own: 2xx delivered; network
errors, timeouts, 408, 429 and 5xx retried after the next delay of the schedule (with jitter)
until the attempts run out; redirects (never followed) and other 4xx given up at once. Nothing
here ever touches a job: webhooks cannot block, fail or change one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Table, bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice import __version__
from mlservice.db import Database
from mlservice.errors import ServiceUnavailable
from mlservice.types import utcnow
from mlservice.webhooks import outbox
from mlservice.webhooks.destinations import (
    DestinationRefused,
    Resolver,
    resolve_destination,
    system_resolver,
)
from mlservice.webhooks.service import user_secrets
from mlservice.webhooks.signing import signature
from mlservice.webhooks.tables import WebhookDelivery

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
# Longest Retry-After (seconds) a receiver can ask for; later than that it is not honoured.
MAX_RETRY_AFTER_S = 3600.0
MAX_ERROR_LENGTH = 500
_jitter = secrets.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    delays: Sequence[float]

    def next_delay(self, attempts: int) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones; None: give up."""
        if attempts >= self.max_attempts:
            return None
        base = self.delays[min(attempts, len(self.delays)) - 1]
        return base * _jitter.uniform(0.8, 1.2)


@dataclass(frozen=True)
class Claimed:
    id: int
    # None: an account event (``balance.low``), not a job's.
    job_id: uuid.UUID | None
    user_id: uuid.UUID
    event: str
    url: str
    payload: dict[str, Any]
    attempts: int
    secret: str = ""


@dataclass(frozen=True)
class Result:
    delivered: bool = False
    retryable: bool = False
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None


class WebhookDeliverer:
    def __init__(
        self,
        db: Database,
        *,
        timeout_s: float,
        policy: RetryPolicy,
        allow_private: bool,
        concurrency: int = 16,
        poll_interval_s: float = POLL_INTERVAL_S,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.db = db
        self.timeout_s = timeout_s
        self.policy = policy
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.transport = transport
        self.resolver = resolver
        # A claimed delivery may be sent again by another process only after this.
        self.lease = timedelta(seconds=2 * timeout_s + 30)
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        outbox.attach(db, self)

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._client = httpx.AsyncClient(
            transport=self.transport,
            # The whole attempt is limited to timeout_s (see send); this only backs it up.
            timeout=self.timeout_s + 1,
            follow_redirects=False,
            # Every request goes to the address checked for it: no connection is reused for
            # another host name, and no proxy from the environment gets in between.
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,
        )
        self._loop = asyncio.create_task(self._run_forever(), name="webhook-deliverer")

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop claiming; give sends in flight ``grace_s`` to finish. Unfinished ones stay pending
        and are sent again once their lease is over."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._in_flight:
            _, unfinished = await asyncio.wait(self._in_flight, timeout=grace_s)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """New deliveries may be due: look now rather than at the next poll."""
        self._wake.set()

    async def _run_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.dispatch()
            except ServiceUnavailable:
                pass  # the database is away (logged once, by the database); the next poll retries
            except Exception:
                log.warning("could not claim webhook deliveries", exc_info=True)

    async def dispatch(self) -> int:
        """Claim what is due, as many as there are free slots, and start sending it."""
        started = 0
        while (free := self.concurrency - len(self._in_flight)) > 0:
            claimed = await self.claim(free)
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._sent)
            started += len(claimed)
            if len(claimed) < free:
                break
        return started

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        # A slot is free, and the job's next event may be due now.
        self._wake.set()

    async def claim(self, limit: int) -> list[Claimed]:
        async with self.db.session() as session:
            # A read first: an idle process polls without taking SQLite's writer.
            if await session.scalar(_ANY_DUE, {"now": utcnow()}) is None:
                return []
        async with self.db.session(write=True) as session:
            now = utcnow()
            rows = list(
                await session.execute(_CLAIM, {"now": now, "lease_until": now + self.lease, "n": limit})
            )
            if not rows:
                return []
            keys = await user_secrets(session, {row.user_id for row in rows})
        return [
            Claimed(
                id=row.id,
                job_id=row.job_id,
                user_id=row.user_id,
                event=row.event,
                url=row.url,
                payload=row.payload,
                attempts=row.attempts,
                secret=keys[row.user_id],
            )
            for row in sorted(rows, key=lambda r: r.id)
        ]

    async def _deliver(self, delivery: Claimed) -> None:
        try:
            result = await self.send(delivery)
        except Exception as exc:  # a bug, not the receiver: still never lose the delivery
            log.exception("webhook delivery %s failed unexpectedly", delivery.id)
            result = Result(retryable=True, error=f"internal error: {exc!r}")
        try:
            async with self.db.session(write=True) as session:
                await self.record(session, delivery, result)
        except Exception:
            # The lease runs out and the delivery is attempted again.
            log.warning("could not record webhook delivery %s", delivery.id, exc_info=True)

    async def send(self, delivery: Claimed) -> Result:
        """One attempt: resolve and check the destination, POST the signed body."""
        assert self._client is not None, "the deliverer is not started"
        body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
        message_id = str(delivery.id)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": f"mlservice-webhooks/{__version__}",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(delivery.secret, message_id, timestamp, body),
            "webhook-event": delivery.event,
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                url = httpx.URL(delivery.url)
                host = url.raw_host.decode("ascii")
                port = url.port or (443 if url.scheme == "https" else 80)
                address = await resolve_destination(
                    host, port, allow_private=self.allow_private, resolver=self.resolver
                )
                extensions: dict[str, Any] = {}
                if url.scheme == "https" and address != host:
                    # TLS still names (and checks the certificate of) the host, not the address.
                    extensions["sni_hostname"] = host
                headers["host"] = url.netloc.decode("ascii")
                async with self._client.stream(
                    "POST", url.copy_with(host=address), content=body, headers=headers, extensions=extensions
                ) as response:
                    return classify(response)
        except DestinationRefused as exc:
            return Result(error=f"destination not allowed: {exc}")
        except httpx.InvalidURL as exc:
            return Result(error=f"invalid URL: {exc}")
        except TimeoutError:
            return Result(retryable=True, error=f"no answer within {self.timeout_s:g} s")
        except (httpx.HTTPError, OSError) as exc:
            return Result(retryable=True, error=f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))

    async def record(self, session: AsyncSession, delivery: Claimed, result: Result) -> None:
        now = utcnow()
        status, next_attempt_at, delivered_at = "delivered", now, None
        if result.delivered:
            delivered_at = now
        else:
            delay = self.policy.next_delay(delivery.attempts) if result.retryable else None
            if delay is None:
                status = "failed"
                log.warning(
                    "webhook %s of %s given up after %d attempts: %s",
                    delivery.event,
                    f"job {delivery.job_id}" if delivery.job_id else f"user {delivery.user_id}",
                    delivery.attempts,
                    result.error,
                )
            else:
                status = "pending"
                if result.retry_after is not None:
                    delay = max(delay, min(result.retry_after, MAX_RETRY_AFTER_S))
                next_attempt_at = now + timedelta(seconds=delay)
        await session.execute(
            _SETTLE,
            {
                "b_id": delivery.id,
                "b_attempts": delivery.attempts,
                "b_status": status,
                "b_next": next_attempt_at,
                "b_code": result.status_code,
                "b_error": result.error[:MAX_ERROR_LENGTH] if result.error else None,
                "b_delivered": delivered_at,
            },
        )


def classify(response: httpx.Response) -> Result:
    code = response.status_code
    if 200 <= code < 300:
        return Result(delivered=True, status_code=code)
    if code in (408, 429) or code >= 500:
        return Result(
            retryable=True,
            status_code=code,
            error=f"HTTP {code}",
            retry_after=_seconds(response.headers.get("retry-after")),
        )
    if 300 <= code < 400:
        return Result(status_code=code, error=f"HTTP {code}: redirects are not followed")
    return Result(status_code=code, error=f"HTTP {code}")


def _seconds(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None  # an HTTP date is not worth parsing here: the schedule's delay applies
    return float(value.strip())


_deliveries = cast(Table, WebhookDelivery.__table__)
_earlier = _deliveries.alias("earlier")

_ANY_DUE = (
    select(_deliveries.c.id)
    .where(_deliveries.c.status == "pending", _deliveries.c.next_attempt_at <= bindparam("now"))
    .limit(1)
)
# Due, and no earlier event of the same job still pending; oldest first.
_CLAIM = (
    update(_deliveries)
    .where(
        _deliveries.c.id.in_(
            select(_deliveries.c.id)
            .where(
                _deliveries.c.status == "pending",
                _deliveries.c.next_attempt_at <= bindparam("now"),
                ~exists().where(
                    _earlier.c.job_id == _deliveries.c.job_id,
                    _earlier.c.status == "pending",
                    _earlier.c.id < _deliveries.c.id,
                ),
            )
            .order_by(_deliveries.c.next_attempt_at, _deliveries.c.id)
            .limit(bindparam("n"))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        ),
        _deliveries.c.status == "pending",
    )
    .values(attempts=_deliveries.c.attempts + 1, next_attempt_at=bindparam("lease_until"))
    .returning(
        _deliveries.c.id,
        _deliveries.c.job_id,
        _deliveries.c.user_id,
        _deliveries.c.event,
        _deliveries.c.url,
        _deliveries.c.payload,
        _deliveries.c.attempts,
    )
)
# The attempt's result, written only while the delivery is still this attempt's.
_SETTLE = (
    update(_deliveries)
    .where(
        _deliveries.c.id == bindparam("b_id"),
        _deliveries.c.status == "pending",
        _deliveries.c.attempts == bindparam("b_attempts"),
    )
    .values(
        status=bindparam("b_status"),
        next_attempt_at=bindparam("b_next"),
        last_status_code=bindparam("b_code"),
        last_error=bindparam("b_error"),
        delivered_at=bindparam("b_delivered"),
    )
)
