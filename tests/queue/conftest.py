"""Fixtures for the RabbitMQ tests (tests/fixtures/broker.py): a vhost of their own per test, and
the environment of worker processes that share the test's database, broker and storage."""

from tests.fixtures.broker import broker_url, worker_env  # noqa: F401
