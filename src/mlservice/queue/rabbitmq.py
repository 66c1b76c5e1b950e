"""RabbitMQ behind the queue interface (aio-pika).

Topology: a durable direct exchange routes each job id to a durable quorum queue per model.
Messages are persistent and published with confirms; workers ack only after the job's outcome
is committed, so a worker that dies mid-job leaves its message to be redelivered (the guarded
claim makes a redelivery of a job already running or finished harmless). Quorum queues count
redeliveries: past ``delivery_limit`` a message goes to the dead-letter exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from mlservice.queue.base import Delivery, MoreQueued
from mlservice.queue.memory import gather_batch

log = logging.getLogger(__name__)

EXCHANGE = "mlservice.jobs"
DEAD_LETTER_EXCHANGE = "mlservice.jobs.dead"
DEAD_LETTER_QUEUE = "mlservice.jobs.dead"

CONNECT_TIMEOUT_S = 10.0
OPEN_TIMEOUT_S = 20.0  # connect, declare the topology, start the consumers
CHANNEL_CHECK_INTERVAL_S = 2.0
MAX_RECONNECT_DELAY_S = 5.0


def queue_name(model_slug: str) -> str:
    return f"{EXCHANGE}.{model_slug}"


@dataclass
class RabbitDelivery:
    job_id: uuid.UUID
    message: AbstractIncomingMessage

    async def ack(self) -> None:
        await self.message.ack()

    async def requeue(self) -> None:
        await self.message.nack(requeue=True)

    async def dead_letter(self) -> None:
        # Rejected without requeue, the quorum queue routes it to the dead-letter exchange.
        await self.message.reject(requeue=False)


@dataclass
class _Consumer:
    channel: AbstractChannel
    queue: AbstractQueue
    tag: str


class RabbitMQQueue:
    """Publisher and consumer over one connection that this class keeps alive itself.

    When the connection drops (broker restart, network) a supervisor reconnects with backoff and
    restores the topology and every consumer. Deliveries received on the lost connection are
    dropped from the local buffers: the broker requeued them when the connection closed. Publishes
    while disconnected fail at once; the relay republishes those jobs later.
    """

    durable = True

    def __init__(self, url: str, *, delivery_limit: int = 5) -> None:
        self.url = url
        self.delivery_limit = delivery_limit
        self._connection: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._slugs: list[str] = []
        self._declared: set[str] = set()
        self._prefetch: dict[str, int] = {}  # slug -> prefetch of the consumers to keep running
        self._consumers: dict[str, _Consumer] = {}
        self._buffers: dict[str, asyncio.Queue[Delivery]] = {}
        self._lost = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed and not self._lost.is_set()

    async def connect(self, model_slugs: Iterable[str]) -> None:
        """Connect now if the broker answers, else keep trying in the background.

        A process started while the broker is down still comes up: publishes fail until it is
        back (the relay republishes those jobs) and consumers start once it is reachable.
        """
        self._slugs = list(model_slugs)
        try:
            await asyncio.wait_for(self._open(), OPEN_TIMEOUT_S)
        except Exception as exc:
            log.warning("RabbitMQ not reachable at start (%s); will keep trying", exc)
            self._lost.set()
        self._supervisor = asyncio.create_task(self._supervise(), name="rabbitmq-supervisor")

    async def _open(self) -> None:
        connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
            dead = await channel.declare_exchange(
                DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
            )
            dead_queue = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
            await dead_queue.bind(dead)
            self._declared = set()
            for slug in [*self._slugs, *self._prefetch]:
                await self._declare(channel, slug)
            consumers = {}
            for slug, prefetch in self._prefetch.items():
                consumers[slug] = await self._start_consumer(connection, slug, prefetch)
        except BaseException:
            await connection.close()
            raise
        connection.close_callbacks.add(self._on_close)
        self._connection, self._publish_channel, self._exchange = connection, channel, exchange
        self._consumers = consumers
        self._lost.clear()

    def _on_close(self, sender: object, exc: BaseException | None = None) -> None:
        if not self._closing:
            self._lost.set()

    async def _supervise(self) -> None:
        while True:
            # A channel can die alone (e.g. a protocol error); treat that like a lost connection.
            try:
                await asyncio.wait_for(self._lost.wait(), CHANNEL_CHECK_INTERVAL_S)
            except TimeoutError:
                if not self._channels_closed():
                    continue
            if self._closing:
                return
            log.warning("lost the connection to RabbitMQ; reconnecting")
            await self._drop_connection()
            delay = 0.5
            while not self._closing:
                try:
                    # Bounded: a broker that is still starting can accept the connection and then
                    # leave a declaration unanswered.
                    await asyncio.wait_for(self._open(), OPEN_TIMEOUT_S)
                except Exception as exc:
                    log.warning("RabbitMQ not reachable (%r); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RECONNECT_DELAY_S)
                    continue
                log.info("reconnected to RabbitMQ")
                break

    def _channels_closed(self) -> bool:
        channels = [c.channel for c in self._consumers.values()]
        if self._publish_channel is not None:
            channels.append(self._publish_channel)
        return self._connection is not None and any(channel.is_closed for channel in channels)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._publish_channel = self._exchange = None
        self._consumers = {}
        # Unacknowledged deliveries of the old connection are back in the broker's queues.
        for buffer in self._buffers.values():
            while not buffer.empty():
                buffer.get_nowait()
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _declare(self, channel: AbstractChannel, slug: str) -> AbstractQueue:
        # Declared by publishers too: a job published before any worker started must not be
        # dropped as unroutable.
        queue = await channel.declare_queue(
            queue_name(slug),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                "x-delivery-limit": self.delivery_limit,
            },
        )
        if slug not in self._declared:
            await queue.bind(EXCHANGE, routing_key=slug)
            self._declared.add(slug)
        return queue

    async def publish(self, model_slug: str, job_id: uuid.UUID) -> None:
        if self._exchange is None or self._publish_channel is None or not self.connected:
            raise ConnectionError("not connected to RabbitMQ")
        if model_slug not in self._declared:
            await self._declare(self._publish_channel, model_slug)
        message = aio_pika.Message(
            str(job_id).encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="text/plain",
            message_id=str(job_id),
        )
        # With publisher confirms this returns once the broker has the message on disk; mandatory
        # makes an unroutable message an error instead of a silent loss.
        await self._exchange.publish(message, routing_key=model_slug, mandatory=True)

    async def consume(self, model_slug: str, prefetch: int) -> None:
        """Receive a model's jobs, at most ``prefetch`` unacknowledged at a time (from now on if
        connected, else from the next successful connection)."""
        self._buffers.setdefault(model_slug, asyncio.Queue())
        self._prefetch[model_slug] = prefetch
        if self.connected and self._connection is not None:
            try:
                self._consumers[model_slug] = await asyncio.wait_for(
                    self._start_consumer(self._connection, model_slug, prefetch), OPEN_TIMEOUT_S
                )
            except Exception as exc:
                # The connection broke under us: the supervisor reconnects and starts it then.
                log.warning("could not start consuming %s (%r); will after reconnecting", model_slug, exc)
                self._lost.set()

    async def _start_consumer(self, connection: AbstractConnection, slug: str, prefetch: int) -> _Consumer:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await self._declare(channel, slug)
        buffer = self._buffers[slug]

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                job_id = uuid.UUID(message.body.decode())
            except (UnicodeDecodeError, ValueError):
                log.error("dead-lettering a malformed message on %s: %r", slug, message.body[:80])
                await message.reject(requeue=False)
                return
            buffer.put_nowait(RabbitDelivery(job_id, message))

        tag = await queue.consume(on_message, no_ack=False)
        return _Consumer(channel, queue, tag)

    async def stop_consuming(self) -> None:
        self._prefetch.clear()
        for consumer in self._consumers.values():
            with contextlib.suppress(Exception):
                await consumer.queue.cancel(consumer.tag)
        self._consumers = {}

    async def next_batch(
        self, model_slug: str, max_size: int, max_wait_s: float, more_queued: MoreQueued | None = None
    ) -> list[Delivery]:
        return await gather_batch(self._buffers[model_slug], max_size, max_wait_s, more_queued)

    async def close(self) -> None:
        self._closing = True
        self._lost.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._drop_connection()
