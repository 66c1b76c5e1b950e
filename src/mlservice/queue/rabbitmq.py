"""RabbitMQ behind the queue interface (aio-pika).

Topology: a durable direct exchange routes each job id to a durable quorum queue per model.
Messages are persistent and published with confirms; workers ack only after the job's outcome
is committed, so a worker that dies mid-job leaves its message to be redelivered (the guarded
claim makes a redelivery of a job already running or finished harmless). Quorum queues count
redeliveries: past ``delivery_limit`` a message goes to the dead-letter exchange.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from mlservice.queue.base import Delivery
from mlservice.queue.memory import gather_batch

log = logging.getLogger(__name__)

EXCHANGE = "mlservice.jobs"
DEAD_LETTER_EXCHANGE = "mlservice.jobs.dead"
DEAD_LETTER_QUEUE = "mlservice.jobs.dead"


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
    buffer: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)


class RabbitMQQueue:
    durable = True

    def __init__(self, url: str, *, delivery_limit: int = 5) -> None:
        self.url = url
        self.delivery_limit = delivery_limit
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: dict[str, _Consumer] = {}
        self._declared: set[str] = set()

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def connect(self, model_slugs: Iterable[str]) -> None:
        self._connection = await aio_pika.connect_robust(self.url)
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._publish_channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dead = await self._publish_channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await self._publish_channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
        await dead_queue.bind(dead)
        for slug in model_slugs:
            await self._declare(self._publish_channel, slug)

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
        if self._exchange is None or self._publish_channel is None:
            raise RuntimeError("RabbitMQQueue.connect() was not called")
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
        """Start receiving a model's jobs; at most ``prefetch`` unacknowledged at a time."""
        if self._connection is None:
            raise RuntimeError("RabbitMQQueue.connect() was not called")
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await self._declare(channel, model_slug)
        consumer = _Consumer(channel, queue, tag="")

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                job_id = uuid.UUID(message.body.decode())
            except (UnicodeDecodeError, ValueError):
                log.error("dead-lettering a malformed message on %s: %r", model_slug, message.body[:80])
                await message.reject(requeue=False)
                return
            consumer.buffer.put_nowait(RabbitDelivery(job_id, message))

        consumer.tag = await queue.consume(on_message, no_ack=False)
        self._consumers[model_slug] = consumer

    async def stop_consuming(self) -> None:
        for consumer in self._consumers.values():
            await consumer.queue.cancel(consumer.tag)

    async def next_batch(self, model_slug: str, max_size: int, max_wait_s: float) -> list[Delivery]:
        return await gather_batch(self._consumers[model_slug].buffer, max_size, max_wait_s)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
