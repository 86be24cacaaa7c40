"""Fixtures for the lab tests: whole labs of real processes on free loopback ports."""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skyfleet.lab.config import LabConfig
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.state import LabState, read_api_key
from skyfleet.lab.topology import busy_ports

# Below the kernel's ephemeral range (32768+), so client sockets never take a lab's port.
PORT_RANGE = (20000, 32000)
BLOCK = 100


def free_base_port() -> int:
    """A base port whose whole block is free now."""
    for _ in range(200):
        base = random.randrange(PORT_RANGE[0], PORT_RANGE[1] - BLOCK, BLOCK)
        if not busy_ports(list(range(base, base + BLOCK))):
            return base
    raise RuntimeError("no free block of loopback ports")


def client(state: LabState) -> httpx.Client:
    """An HTTPS client for the lab's front door, verifying its CA, with the lab's API key."""
    assert state.front_door.https_url and state.front_door.ca_file
    return httpx.Client(
        base_url=state.front_door.https_url,
        verify=ssl.create_default_context(cafile=state.front_door.ca_file),
        headers={"Authorization": f"Bearer {read_api_key(state.state_dir)}"},
        timeout=15,
    )


def running(config: LabConfig) -> Iterator[LabState]:
    """Bring a lab up for a fixture, and down afterwards with no process of it left."""
    state = up(config)
    try:
        yield state
    finally:
        down(state.state_dir)
        assert marked_pids(state.state_dir) == []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    """A three-site lab (aws, gcp, onprem; 2 replicas each; 1 s health checks)."""
    state_dir: Path = tmp_path_factory.mktemp("lab")
    yield from running(LabConfig(state_dir=state_dir, base_port=free_base_port(), health_interval="1s"))
