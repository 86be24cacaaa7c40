"""The unit tier starts no server. While a unit test sets up and runs, binding a socket or
launching a server's process (redis-server, nats-server, moto_server, haproxy, podman, a policy
pack's Analyzer) fails the test, naming what it started: such a test belongs in
tests/integration/. (Not in teardown: when the tiers share a process, the last test's teardown
also stops the integration tier's session servers.)"""

from __future__ import annotations

import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

SERVERS = frozenset({"redis-server", "redis-sentinel", "nats-server", "moto_server", "haproxy", "podman"})
ANALYZER = "pulumi.policy"  # `python -m pulumi.policy`: a policy pack serving the Analyzer protocol


class ServerInUnitTest(RuntimeError):
    pass


_guarding = False


def _argv(args: Any) -> list[str]:
    if isinstance(args, str | bytes | Path):
        return [str(args)]
    return [str(a) for a in args] if isinstance(args, Sequence) else []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _guarding:
        return
    if event == "socket.bind":
        raise ServerInUnitTest(f"a unit test binds a socket ({args[1]!r}): move it to tests/integration/")
    if event == "subprocess.Popen":
        argv = _argv(args[1]) or _argv(args[0])
        program = Path(argv[0]).name if argv else ""
        if program in SERVERS or ANALYZER in argv:
            raise ServerInUnitTest(f"a unit test starts {' '.join(argv[:4])}: move it to tests/integration/")


sys.addaudithook(_audit)


def _guarded() -> Generator[None, Any, Any]:
    global _guarding
    _guarding = True
    try:
        return (yield)
    finally:
        _guarding = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded())
