"""Fixtures for the image tests: the app image built from agent_app/Dockerfile (once per
session, on the content-keyed local base), and real redis-server and nats-server (JetStream)
for the containers to use. Skipped, with the reason, where podman cannot run containers."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.lab import image
from skyfleet.lab.container import Podman, problems
from skyfleet.testing.servers import REDIS_SERVER, Proc, free_port, port_open, wait_until


def missing() -> list[str]:
    found = problems()
    if shutil.which("debootstrap") is None and shutil.which("debootstrap", path="/usr/sbin:/sbin") is None:
        found.append(f"debootstrap is not installed: {image.DEBOOTSTRAP_HINT}")
    return found


SKIP_REASON = "; ".join(missing())


@pytest.fixture(scope="session")
def podman() -> Podman:
    return Podman()


@pytest.fixture(scope="session")
def base_image(podman: Podman) -> image.Built:
    """The local base (debootstrapped once, then found by its content key)."""
    return image.build_base(podman)


@pytest.fixture(scope="session")
def app_image(podman: Podman, base_image: image.Built) -> Iterator[image.Built]:
    """The app image from agent_app/Dockerfile, under a tag of this session's own.

    A Dockerfile that does not build raises here, which errors every test that needs it.
    """
    tag = f"localhost/skyfleet/agent-app:test-{uuid.uuid4().hex[:8]}"
    built = image.build_app(podman, base=base_image.tag, tag=tag)
    yield built
    podman.run("rmi", "--force", tag, check=False)


class RedisWithPassword:
    """A real redis-server on a free loopback port that demands a password (AUTH)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.password = f"pw-{uuid.uuid4().hex}"
        self.dir = tmp
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(tmp), "--requirepass", self.password]
        self.proc = Proc("redis", argv)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisWithPassword:
        self.proc.start()
        wait_until(lambda: port_open(self.port), what=f"redis-server on {self.port}")
        return self

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisWithPassword]:
    server = RedisWithPassword(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
