"""The Celery baseline of bench/scale.py: a no-op task's round trip over the same RabbitMQ.

    BENCH_CELERY_BROKER=amqp://guest:guest@127.0.0.1:5672/VHOST \\
        .venv/bin/celery -A bench.celery_noop worker --pool=solo --prefetch-multiplier=32

Results come back through the ``rpc://`` backend (a reply queue per client). With
``BENCH_CELERY_DURABLE=1`` the task queue is a quorum queue, publishes wait for the broker's
confirm and the worker acks after the task ran: the guarantees mlservice's queue gives its jobs
(which also commit every job to PostgreSQL, which Celery never does).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

QUEUE = "bench-noop"
TASK = "bench.noop"


def make_app(broker: str | None = None, durable: bool | None = None) -> Celery:
    """A Celery app on ``broker`` (default BENCH_CELERY_BROKER); ``durable`` (default
    BENCH_CELERY_DURABLE=1) gives its queue mlservice's guarantees."""
    app = Celery(
        "bench_noop",
        broker=broker or os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
        backend="rpc://",
    )
    app.conf.update(
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    if durable is None:
        durable = os.environ.get("BENCH_CELERY_DURABLE") == "1"
    if durable:
        app.conf.update(
            task_queues=[Queue(QUEUE, queue_arguments={"x-queue-type": "quorum"})],  # type: ignore[no-untyped-call]
            broker_transport_options={"confirm_publish": True},
            task_acks_late=True,
        )
    return app


app = make_app()


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def noop() -> float:
    """Does nothing; returns when it ran (time.time()), which tells broker delays from reply delays."""
    import time

    return time.time()


_apps: dict[tuple[str, bool], Celery] = {}


def client(broker: str, durable: bool, start: float, stop: float) -> list[tuple[float, float, float]]:
    """One closed-loop client (run in a process of its own): ``send_task(...).get()`` from
    ``start`` until ``stop`` (time.time()); returns (sent, ran, done) of every round trip.

    One app (kept for the process's next calls) and one outstanding task per client process: one
    rpc:// result consumer waiting for many results in turn, or shared by threads, loses some
    (celery/celery#3111, #4084), which showed here as 3-10 s stalls and timeouts.
    """
    import time

    own = _apps.get((broker, durable))
    if own is None:
        own = _apps[broker, durable] = make_app(broker, durable)
    own.send_task(TASK).get(timeout=60)  # connected, and the worker answers
    time.sleep(max(start - time.time(), 0.0))
    trips = []
    while time.time() < stop:
        sent = time.time()
        ran = float(own.send_task(TASK).get(timeout=60))
        trips.append((sent, ran, time.time()))
    return trips
