"""The integration tier: tests against real servers. These fixtures start redis-server,
nats-server (JetStream), moto_server and the Pub/Sub gRPC server once per test session (per
xdist worker) on free loopback ports, and stop them at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skyfleet.testing.servers import MotoServer, NatsServer, RedisServer
from tests.support.pubsub_server import PubSubServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pubsub_server() -> Iterator[PubSubServer]:
    server = PubSubServer().start()
    yield server
    server.stop()
