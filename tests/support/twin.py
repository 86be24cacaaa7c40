"""The lab twin for tests: bring one up, reach its names as a client would, wait with a bound.

A twin is built from the shipped stacks' offline plans (``skyfleet.lab``). Clients reach a site
by the names its certificate holds, resolved by the lab's DNS on the WAN, and verify TLS against
the lab's public roots, exactly as the drills' load does (``skyfleet.drills.frontdoor``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from skyfleet.drills.frontdoor import FrontDoor
from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.state import LabState, load_state, read_api_keys
from skyfleet.lab.status import lab_status

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="the lab runs every site and pod in namespaces: root")


def eventually(check: Callable[[], Any], *, timeout: float = 60.0, what: str, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def door(state: LabState, name: str | None = None) -> FrontDoor:
    """A client's way to ``https://<name>`` (default: the edge's global name) through the lab."""
    assert state.edge is not None, "a lab without an edge has no DNS for clients"
    return FrontDoor(
        url=f"https://{name or state.edge.fqdn}",
        api_keys=tuple(read_api_keys(state.state_dir)),
        dns=(state.edge.dns_address, state.edge.dns_port),
        network=state.fabric.subnet,
        ca_file=state.public_ca_file,
    )


def client(state: LabState, name: str | None = None, *, key: int = 0, timeout: float = 15) -> httpx.Client:
    d = door(state, name)
    return d.client(headers=d.auth(key), timeout=timeout)


def site_name(state: LabState, site: str) -> str:
    """The site's own host name (its certificate's first name other than the global one)."""
    own = [n for n in state.sites[site].lb_names if state.edge is None or n != state.edge.fqdn]
    return own[0]


def wait_healthy(state_dir: str, timeout: float = 120.0) -> dict[str, Any]:
    """Every process running and ready, every load balancer backend UP."""
    last: Any = None

    def healthy() -> bool:
        nonlocal last
        try:
            last = lab_status(state_dir)
        except LabError as exc:
            last = str(exc)
            return False
        return bool(last["healthy"])

    deadline = time.monotonic() + timeout
    while not healthy():
        if time.monotonic() > deadline:
            unhealthy = (
                [p for p in last["processes"] if p["state"] != "running" or p.get("ready") is False]
                if isinstance(last, dict)
                else last
            )
            pytest.fail(f"the lab is not healthy after {timeout:g} s: {unhealthy}")
        time.sleep(0.5)
    return last


def namespaces(lab_id: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"skyfleet-{lab_id}")]


def pids_inside(lab_id: str) -> list[int]:
    """Every process living in one of the lab's namespaces (whatever its environment says)."""
    pids = []
    for ns in namespaces(lab_id):
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    return pids


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie waiting for its reaper has exited)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            running.append(pid)
    return running


@contextlib.contextmanager
def running(config: LabConfig, **kwargs: Any) -> Iterator[LabState]:
    """A lab up for the block, and down after it with no process or namespace of it left."""
    state = up(config, **kwargs)
    try:
        yield state
    finally:
        inside = pids_inside(state.lab_id)
        down(state.state_dir)
        assert marked_pids(state.state_dir) == []
        assert alive(inside) == [], "processes of the lab outlived lab down"
        assert namespaces(state.lab_id) == []
        assert load_state(state.state_dir).phase == "down"


def twin_config(state_dir: Path, **fields: Any) -> LabConfig:
    """The shipped prod sites and their edge, from this checkout's Pulumi project."""
    return LabConfig.model_validate({"program": ROOT, "state_dir": state_dir, **fields})


def edge_twin(factory: pytest.TempPathFactory, edge: str) -> Iterator[LabState]:
    """A module fixture's body: the shipped prod sites behind the edge stack ``edge``."""
    if not IS_ROOT:
        pytest.skip("the lab runs every site and pod in namespaces: root")
    with running(twin_config(factory.mktemp(f"{edge}-twin"), edge=edge)) as state:
        yield state
