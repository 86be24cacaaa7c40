"""The server launchers' ports (``skyfleet.testing.servers``)."""

from __future__ import annotations

import socket

import pytest

from skyfleet.testing.servers import LOWEST_PORT, RedisServer, ephemeral_start, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    """Outgoing connections draw their source ports from the ephemeral range: a port picked
    there may be taken before its server binds it, so the launchers pick below it."""
    top = ephemeral_start()
    ports = {free_port() for _ in range(50)}
    assert all(LOWEST_PORT <= port < top for port in ports), sorted(ports)
    assert len(ports) > 40  # drawn at random, not handed out in turn
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_is_handed_out_once_and_from_this_workers_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port picked and not yet bound (a fleet's sites name each other's before they start) is
    never picked again, and parallel test workers pick from disjoint shares of the range."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    top = ephemeral_start()
    share = (top - LOWEST_PORT) // 2
    for worker, low in (("gw0", LOWEST_PORT), ("gw1", LOWEST_PORT + share)):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        picked = {free_port() for _ in range(30)}
        assert all(low <= port < low + share for port in picked), (worker, sorted(picked))


def test_a_server_started_on_a_picked_port_listens_there() -> None:
    port = free_port()
    redis = RedisServer(port=port).start()
    try:
        assert redis.port == port
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        redis.stop()
