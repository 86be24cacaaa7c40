"""Fixtures of the app's tests: a chat-completions server per test, and an api process on the
session's Redis and a NATS stream of its own, shared by a module's HTTP-level tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skyfleet.testing.servers import AppProcess, NatsServer, RedisServer, app_env
from tests.integration.agent_app.chat_server import ChatServer
from tests.support.brokers import NatsBroker


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


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
