"""Fixtures for the drill tests: real servers on free loopback ports, torn down after."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest

from tests.agent_app.brokers import NatsBroker
from tests.agent_app.servers import API_KEY, AppProcess, NatsServer, RedisServer, app_env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real moto_server (AWS API emulator) on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 pointed at moto (AWS_ENDPOINT_URL) with throwaway credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_url


def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip every cloud credential and point the SDKs at a closed port: a call would fail."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "GOOGLE_", "CLOUDSDK_", "KUBECONFIG")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")


@dataclass
class AgentSite:
    """A real agent app: api and worker processes on real Redis and NATS JetStream."""

    api: AppProcess
    worker: AppProcess
    redis: RedisServer

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def api_key(self) -> str:
        return API_KEY


@pytest.fixture(scope="module")
def agent_site() -> Iterator[AgentSite]:
    """One real site for a module's load and drill tests (no lab: no front door, one replica)."""
    redis, nats = RedisServer().start(), NatsServer().start()
    env = app_env(redis.url, NatsBroker(nats).env["AGENT_QUEUE_URL"])
    api = worker = None
    try:
        api = AppProcess("api", env).start()
        worker = AppProcess("worker", env).start()
        yield AgentSite(api, worker, redis)
    finally:
        for proc in (worker, api):
            if proc is not None:
                proc.stop()
        nats.stop()
        redis.stop()


def ecs_service(cluster: str, service: str, count: int) -> Callable[[], int]:
    """Create an ECS service of ``count`` tasks on moto (``aws_env``); return a reader of its
    desired count."""
    ecs = boto3.client("ecs", region_name="us-east-1")
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family="api", containerDefinitions=[{"name": "api", "image": "agent:1", "memory": 512}]
    )
    ecs.create_service(cluster=cluster, serviceName=service, taskDefinition="api", desiredCount=count)

    def desired() -> int:
        return ecs.describe_services(cluster=cluster, services=[service])["services"][0]["desiredCount"]

    return desired
