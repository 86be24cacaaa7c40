"""Bringing a twin up and down whatever happened in between: refusals before anything starts,
skyfleet killed mid-up, a damaged state file, two labs side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_app.contract import SITE_HEADER
from skyfleet.lab.errors import LabError
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.network import free_subnet, ip, networks_lock
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.state import LabState, load_state
from skyfleet.lab.status import lab_status
from tests.support.twin import (
    ROOT,
    alive,
    client,
    namespaces,
    needs_root,
    pids_inside,
    running,
    site_name,
    twin_config,
)


def test_a_folder_that_is_not_a_lab_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "precious.txt").write_text("keep me")
    with pytest.raises(LabError, match="not empty and holds no lab"):
        up(twin_config(tmp_path))
    assert (tmp_path / "logs" / "precious.txt").read_text() == "keep me"


def test_a_stack_without_a_stack_file_is_named(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("up checks for root before it plans")
    with pytest.raises(LabError, match=r"stacks: \['azure-prod'\] have no stack file in .*stacks"):
        up(twin_config(tmp_path / "lab", stacks=["azure-prod"], edge=None))
    assert marked_pids(str((tmp_path / "lab").resolve())) == []


@needs_root
def test_a_lab_whose_subnet_another_lab_uses_takes_the_next_free_one(tmp_path: Path) -> None:
    link = f"sfd{os.getpid() % 100000}"
    with networks_lock():  # no lab starting meanwhile takes either /24
        # This lab's own /24 (or the next free one, when a running lab holds it), taken by a bridge.
        derived = free_subnet(twin_config(tmp_path / "lab", stacks=["onprem-prod"], edge=None).network)
        ip("link", "add", link, "type", "bridge")
        try:
            ip("addr", "add", derived.replace(".0/24", ".1/24"), "dev", link)
            picked = free_subnet(derived)
            assert picked != derived and picked.startswith("10.231.")
        finally:
            ip("link", "del", link)
        assert free_subnet(derived) == derived


def _containers_started(path: Path) -> bool:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return any(p["role"] == "container" and p["pid"] for p in state["processes"])


@needs_root
def test_down_after_skyfleet_was_killed_mid_up_leaves_no_orphans(tmp_path: Path) -> None:
    state_dir = (tmp_path / "lab").resolve()
    argv = [sys.executable, "-m", "skyfleet.cli", "lab", "up", "--stacks", "onprem-prod", "--no-edge"]
    err = tmp_path / "up.err"
    with err.open("w") as stderr:
        skyfleet = subprocess.Popen(
            [*argv, "--program", str(ROOT), "--state-dir", str(state_dir)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        while not _containers_started(state_dir / "lab.json"):
            if skyfleet.poll() is not None:
                pytest.fail(f"skyfleet lab up ended before any container started:\n{err.read_text()}")
            assert time.monotonic() < deadline, "no container ever started"
            time.sleep(0.05)
    finally:
        skyfleet.kill()
        skyfleet.wait()
    lab_id = load_state(state_dir).lab_id
    try:
        assert marked_pids(str(state_dir)), "the lab's processes should have outlived the killed skyfleet"
        with pytest.raises(LabError, match="skyfleet lab down"):
            up(twin_config(state_dir, stacks=["onprem-prod"], edge=None))
    finally:
        inside = pids_inside(lab_id)
        down(state_dir)
    assert marked_pids(str(state_dir)) == []
    assert namespaces(lab_id) == []
    assert alive(inside) == []


@needs_root
def test_down_with_a_damaged_state_file_still_finds_every_process(tmp_path: Path) -> None:
    state = up(twin_config(tmp_path / "lab", stacks=["onprem-prod"], edge=None))
    running_before = marked_pids(state.state_dir)
    # Redis sets its process title over its environment: the lab's marker is gone from them.
    inside = pids_inside(state.lab_id)
    assert running_before and set(inside) - set(running_before)
    Path(state.state_dir, "lab.json").write_text("{ not json")
    result = down(state.state_dir)
    assert set(result["orphans_killed"]) >= set(running_before)
    assert marked_pids(state.state_dir) == []
    assert namespaces(state.lab_id) == []
    assert alive(inside) == []


@needs_root
def test_a_second_lab_runs_beside_the_twin(twin: LabState, tmp_path: Path) -> None:
    """Another lab of one of the same stacks, in its own network: both stay healthy, and the
    twin's site does not see the second lab's data."""
    with running(twin_config(tmp_path / "lab", stacks=["gcp-prod"], edge=None)) as second:
        assert second.fabric.subnet != twin.fabric.subnet
        assert not set(namespaces(second.lab_id)) & set(namespaces(twin.lab_id))
        assert lab_status(second.state_dir)["healthy"]
        assert lab_status(twin.state_dir)["healthy"]
        with client(twin, site_name(twin, "gcp-prod")) as http:
            reply = http.post("/v1/sessions", json={})
            assert reply.status_code == 201 and reply.headers[SITE_HEADER] == "gcp-prod"
    assert lab_status(twin.state_dir)["healthy"]


@needs_root
def test_an_edge_in_front_of_some_of_its_sites_says_which_it_does_not_run(tmp_path: Path) -> None:
    """The edge plan still needs every site's outputs (the referenced stacks are planned); the
    sites the lab does not run fail their health checks, as sites that are down would."""
    with running(twin_config(tmp_path / "lab", stacks=["gcp-prod"], edge="edge-prod")) as state:
        report = lab_status(state.state_dir)
        assert report["healthy"]
        assert any("the lab runs no site for ['aws-prod', 'onprem-prod']" in d for d in report["deviations"])
