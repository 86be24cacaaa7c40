"""Start-up failures, crashes of skyfleet itself, and root-only network faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_app.contract import SITE_HEADER
from skyfleet.lab import faults
from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.replication import node_roles, redis_primary
from skyfleet.lab.state import load_state
from skyfleet.lab.status import lab_status
from skyfleet.lab.topology import busy_ports

from .conftest import client, free_base_port


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    base = free_base_port()
    with socket.socket() as squatter:
        # As the lab's own check does: a TIME_WAIT left by an earlier test must not stop the bind.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", base + 3))
        squatter.listen()
        with pytest.raises(LabError) as caught:
            up(LabConfig(sites=["solo"], state_dir=tmp_path / "lab", base_port=base))
    assert "base_port" in str(caught.value) and str(base + 3) in str(caught.value)
    assert not (tmp_path / "lab" / "lab.json").exists()


def test_a_folder_that_is_not_a_lab_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "precious.txt").write_text("keep me")
    with pytest.raises(LabError, match="not empty and holds no lab"):
        up(LabConfig(sites=["solo"], state_dir=tmp_path, base_port=free_base_port()))
    assert (tmp_path / "logs" / "precious.txt").read_text() == "keep me"


def test_a_failed_up_tears_down_what_it_started(tmp_path: Path) -> None:
    """The app refuses a bad AGENT_LOG_LEVEL at start-up; everything already started must go."""
    state_dir = tmp_path / "lab"
    config = LabConfig(
        sites=["solo"], state_dir=state_dir, base_port=free_base_port(), app_env={"AGENT_LOG_LEVEL": "LOUD"}
    )
    with pytest.raises(LabError) as caught:
        up(config)
    assert "exited while starting" in str(caught.value) and "AGENT_LOG_LEVEL" in str(caught.value)
    state = load_state(state_dir)
    assert state.phase == "failed"
    assert any(r.pid for r in state.processes)  # Redis, Sentinel and NATS had started
    assert marked_pids(str(state_dir.resolve())) == []
    assert busy_ports(state.ports) == []


def test_down_after_skyfleet_was_killed_mid_up_leaves_no_orphans(tmp_path: Path) -> None:
    state_dir = (tmp_path / "lab").resolve()
    base = free_base_port()
    argv = [sys.executable, "-m", "skyfleet.lab", "up", "--sites", "solo", "--state-dir", str(state_dir)]
    skyfleet = subprocess.Popen(
        [*argv, "--base-port", str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not _api_started(state_dir / "lab.json"):
            assert skyfleet.poll() is None, "skyfleet lab up ended before its api replicas started"
            assert time.monotonic() < deadline, "api replicas never started"
            time.sleep(0.05)
    finally:
        os.kill(skyfleet.pid, signal.SIGKILL)
        skyfleet.wait()
    try:
        orphans = marked_pids(str(state_dir))
        assert orphans, "the lab's processes should have outlived the killed skyfleet"
        with pytest.raises(LabError, match="skyfleet lab down"):
            up(LabConfig(sites=["solo"], state_dir=state_dir, base_port=free_base_port()))
    finally:
        result = down(state_dir)
    assert marked_pids(str(state_dir)) == []
    assert result["ports_free"]
    assert busy_ports(load_state(state_dir).ports) == []


def test_down_with_a_damaged_state_file_still_finds_every_process(tmp_path: Path) -> None:
    state = up(LabConfig(sites=["solo"], state_dir=tmp_path / "lab", base_port=free_base_port(), tls=False))
    assert marked_pids(state.state_dir)
    Path(state.state_dir, "lab.json").write_text("{ not json")
    result = down(state.state_dir)
    assert len(result["orphans_killed"]) >= len(state.processes)
    assert marked_pids(state.state_dir) == []
    assert busy_ports(state.ports) == []


def _api_started(path: Path) -> bool:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return any(p["role"] == "api" and p["pid"] for p in state["processes"])


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_partition_in_network_namespaces(tmp_path: Path) -> None:
    """Two sites and a witness, each in a namespace: cutting the primary's site promotes the other."""
    config = LabConfig(
        sites=["east", "west"], state_dir=tmp_path / "lab", base_port=free_base_port(), netns=True
    )
    state = up(config)
    try:
        assert lab_status(state.state_dir)["mode"] == "netns"
        assert redis_primary(state.state_dir)["site"] == "east"
        with client(state) as http:
            session = http.post("/v1/sessions", json={}).json()["id"]
            assert (
                http.post(f"/v1/sessions/{session}/messages", json={"content": "before"}).status_code == 200
            )
            cut = faults.partition_site(state.state_dir, "east")
            assert cut["changed"] and not faults.partition_site(state.state_dir, "east")["changed"]
            deadline = time.monotonic() + 30
            while redis_primary(state.state_dir)["site"] != "west":
                assert time.monotonic() < deadline, "west was never promoted"
                time.sleep(0.2)
            after = http.post(f"/v1/sessions/{session}/messages", json={"content": "after"})
            assert after.status_code == 200 and after.headers[SITE_HEADER] == "west"
            history = http.get(f"/v1/sessions/{session}").json()["messages"]
            assert [m["content"] for m in history if m["role"] == "user"] == ["before", "after"]
            during = http.post("/v1/sessions", json={}).json()["id"]  # exists only after the cut
            faults.heal_partition(state.state_dir, "east")
            roles = {n["name"]: n["role"] for n in node_roles(load_state(state.state_dir))}
            assert roles == {"east-redis": "replica", "west-redis": "primary", "witness-redis": "replica"}
            # East is back in rotation only once reconciled: no stale read from its old primary.
            reads = [http.get(f"/v1/sessions/{during}") for _ in range(8)]
            assert [r.status_code for r in reads] == [200] * 8
            assert "east" in {r.headers[SITE_HEADER] for r in reads}
    finally:
        result = down(state.state_dir)
    assert result["network_removed"] and marked_pids(state.state_dir) == []
    assert not any(ns.startswith(f"skyfleet-{state.lab_id}-") for ns in _namespaces())


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
