"""Fixtures for the drill tests: boto3 pointed at the session's moto_server, one real agent site
per module, and every drill test at the default CPU priority (CI lowers this tier's beside the
lab tier)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import pytest

from skyfleet.testing.servers import AppProcess, MotoServer, NatsServer, RedisServer, app_env
from tests.support.drills import AgentSite
from tests.support.priority import default_priority


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 pointed at moto (AWS_ENDPOINT_URL) with throwaway credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server.endpoint


@pytest.fixture(autouse=True)
def drill_at_default_priority() -> Iterator[None]:
    """A drill is a timing experiment: the drill process (this test, its probes and read-back)
    runs at the default CPU priority, like the servers it measures (``agent_site``)."""
    with default_priority():
        yield


@contextlib.contextmanager
def running_site(
    *, max_deliver: int = 3, worker_env: Mapping[str, str] | None = None, keys: tuple[str, ...] = ()
) -> Iterator[AgentSite]:
    """One real site (no lab: no front door, one replica) at the default CPU priority; its queue
    delivers a task ``max_deliver`` times, its worker runs with ``worker_env`` added; ``keys``:
    client keys it accepts besides the test key."""
    with default_priority():
        redis, nats = RedisServer().start(), NatsServer().start()
    env = app_env(redis.url, nats.queue(max_deliver=max_deliver).url)
    env["AGENT_API_KEYS"] = ",".join((env["AGENT_API_KEYS"], *keys))
    api = worker = None
    try:
        with default_priority():
            api = AppProcess("api", env).start()
            worker = AppProcess("worker", {**env, **(worker_env or {})}).start()
        yield AgentSite(api, worker, redis)
    finally:
        for proc in (worker, api):
            if proc is not None:
                proc.stop()
        nats.stop()
        redis.stop()


@pytest.fixture(scope="module")
def agent_site() -> Iterator[AgentSite]:
    """One real site for a module's load and drill tests."""
    with running_site() as site:
        yield site
