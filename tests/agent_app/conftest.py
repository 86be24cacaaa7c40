"""Fixtures: real redis-server, nats-server, moto_server and the Pub/Sub gRPC boundary,
started once per test session on free loopback ports and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent_app.brokers import Broker, NatsBroker, PubSubBroker, SqsBroker
from tests.agent_app.chat_server import ChatServer
from tests.agent_app.pubsub_server import PubSubServer
from tests.agent_app.servers import AppProcess, MotoServer, NatsServer, RedisServer, app_env


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


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


def make_broker(kind: str, request: pytest.FixtureRequest) -> Broker:
    if kind == "nats":
        return NatsBroker(request.getfixturevalue("nats_server"))
    if kind == "sqs":
        return SqsBroker(request.getfixturevalue("moto_server"))
    return PubSubBroker(request.getfixturevalue("pubsub_server"))


@pytest.fixture
def nats_env(nats_server: NatsServer, redis_server: RedisServer) -> dict[str, str]:
    """Environment for an app on a fresh NATS stream and the shared Redis."""
    return app_env(redis_server.url, NatsBroker(nats_server).env["AGENT_QUEUE_URL"])


@pytest.fixture(scope="module")
def api(
    request: pytest.FixtureRequest, redis_server: RedisServer, nats_server: NatsServer
) -> Iterator[AppProcess]:
    """One api process (NATS queue) shared by a module's HTTP-level tests."""
    broker = NatsBroker(nats_server)
    proc = AppProcess("api", app_env(redis_server.url, broker.env["AGENT_QUEUE_URL"])).start()
    yield proc
    proc.stop()
