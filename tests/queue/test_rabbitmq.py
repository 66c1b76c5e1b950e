"""The RabbitMQ queue against the real broker, each test run in a vhost of its own."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from mlservice.queue.rabbitmq import DEAD_LETTER_QUEUE, RabbitMQQueue
from tests.conftest import wait_for_job
from tests.fixtures.api import totals


async def test_publish_consume_ack_and_redelivery(broker_url: str) -> None:
    publisher, first, second = (RabbitMQQueue(broker_url) for _ in range(3))
    try:
        await publisher.connect(["m"])
        ids = [uuid.uuid4() for _ in range(3)]
        for job_id in ids:
            await publisher.publish("m", job_id)  # confirmed by the broker before it returns

        await first.connect([])
        await first.consume("m", prefetch=3)
        batch = await first.next_batch("m", max_size=3, max_wait_s=1)
        assert [d.job_id for d in batch] == ids
        await batch[0].ack()
        await first.close()  # dies with two messages unacknowledged

        await second.connect([])
        await second.consume("m", prefetch=10)
        again = await second.next_batch("m", max_size=10, max_wait_s=0.5)
        assert sorted(d.job_id for d in again) == sorted(ids[1:])
        for delivery in again:
            await delivery.ack()
    finally:
        for queue in (publisher, first, second):
            await queue.close()


async def test_redelivery_limit_dead_letters(broker_url: str) -> None:
    queue = RabbitMQQueue(broker_url, delivery_limit=1)
    try:
        await queue.connect(["poison"])
        job_id = uuid.uuid4()
        await queue.publish("poison", job_id)
        await queue.consume("poison", prefetch=1)
        for _ in range(2):
            (delivery,) = await queue.next_batch("poison", 1, 0)
            await delivery.requeue()
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            dead = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
            message = None
            for _ in range(50):
                message = await dead.get(fail=False)
                if message is not None:
                    break
                await asyncio.sleep(0.1)
            assert message is not None
            assert message.body.decode() == str(job_id)
            await message.ack()
    finally:
        await queue.close()


async def test_jobs_run_on_a_separate_worker_process(
    worker_env: dict[str, str], service_factory: Any, tmp_path: Path, chelsea_jpeg: bytes
) -> None:
    env = worker_env
    async with service_factory(
        broker_url=env["MLSERVICE_BROKER_URL"], workers=0, storage_dir=tmp_path / "var" / "files"
    ) as service:
        headers = await service.user()
        ids = []
        for _ in range(6):
            r = await service.client.post(
                "/api/jobs",
                data={"model": "image-classification"},
                files={"file": ("cat.jpg", chelsea_jpeg, "image/jpeg")},
                headers=headers,
            )
            ids.append(r.json()["id"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mlservice",
            "worker",
            "--models",
            "image-classification",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            jobs = [await wait_for_job(service.client, headers, job_id, within=90) for job_id in ids]
        finally:
            proc.terminate()
            output = (await proc.communicate())[0].decode()
        assert proc.returncode == 0, output
        assert [j["status"] for j in jobs] == ["succeeded"] * 6, output
        wallet = (await service.client.get("/api/wallet", headers=headers)).json()
        assert totals(wallet) == {"balance": 100 - 6 * 5, "held": 0, "available": 70}
        assert all(j["output"]["predictions"][0]["class_id"] in range(281, 286) for j in jobs)


async def test_a_process_starts_while_the_broker_is_unreachable() -> None:
    queue = RabbitMQQueue("amqp://guest:guest@127.0.0.1:9/")  # nothing listens on the discard port
    try:
        await queue.connect(["m"])  # does not raise: it keeps trying in the background
        await queue.consume("m", prefetch=1)
        assert not queue.connected
        with pytest.raises(ConnectionError):
            await queue.publish("m", uuid.uuid4())
    finally:
        await queue.close()
