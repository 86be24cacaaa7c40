"""The fleet client's order of endpoints: the global name first, a failed one last for its
cooldown (the network behaviour is in tests/integration/agent_app/test_fleet.py)."""

from __future__ import annotations

import pytest

from agent_app.client import FleetClient

GLOBAL, A, B = "https://api.example.com", "https://a.example.com", "https://b.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_endpoint_waits_last_for_its_cooldown_then_comes_back_in_order() -> None:
    clock = Clock()
    client = FleetClient(GLOBAL, "key", sites=[A, B, f"{GLOBAL}/"], cooldown=10, clock=clock)
    assert client.endpoints == [GLOBAL, A, B]  # the global name once, first
    client._failed(GLOBAL)
    clock.now += 1
    client._failed(A)
    assert client.endpoints == [B, GLOBAL, A]  # the one that failed longest ago first
    clock.now += 9.5
    assert client.endpoints == [GLOBAL, B, A]
    clock.now += 1
    assert client.endpoints == [GLOBAL, A, B]


def test_an_endpoint_is_an_http_base_url() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        FleetClient("ftp://x", "key")
    with pytest.raises(ValueError, match="not a url"):
        FleetClient(GLOBAL, "key", sites=["not a url"])
