"""One three-site lab, exercised in order: healthy, serving, surviving site losses, coexisting, down.

Every step uses the real processes: the agent app, redis-server + Sentinel, a nats-server
JetStream cluster and HAProxy. Waits are bounded polls; nothing asserts on durations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from agent_app.contract import INSTANCE_HEADER, SITE_HEADER
from skyfleet.lab import faults
from skyfleet.lab.cli import app
from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.frontdoor import FAIL_OPEN_SUFFIX, health_events, server_states, stat_rows
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.replication import node_roles, redis_primary
from skyfleet.lab.state import LabState, load_state
from skyfleet.lab.status import lab_status
from skyfleet.lab.topology import busy_ports

from .conftest import client, free_base_port


def eventually(check: Callable[[], Any], *, timeout: float = 30.0, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def site_servers(state: LabState, site: str) -> dict[str, str]:
    return {s["server"]: s["status"] for s in server_states(state.state_dir) if s["site"] == site}


def fail_open_twins(state: LabState) -> dict[str, str]:
    """Status of the fail-open backup twins in the main backend, from HAProxy's own stats."""
    return {
        r["svname"].removesuffix(FAIL_OPEN_SUFFIX): r["status"]
        for r in stat_rows(state)
        if r.get("pxname") == state.front_door.backend and r["svname"].endswith(FAIL_OPEN_SUFFIX)
    }


def test_status_is_healthy(lab: LabState) -> None:
    report = lab_status(lab.state_dir)
    assert report["healthy"], json.dumps(report, indent=1)[:3000]
    assert [s["name"] for s in report["sites"]] == ["aws", "gcp", "onprem"]
    roles = {n["name"]: n for n in report["redis"]["nodes"]}
    assert roles["aws-redis"]["role"] == "primary"
    for replica in ("gcp-redis", "onprem-redis"):
        assert roles[replica]["role"] == "replica" and roles[replica]["link"] == "up"
    assert report["redis"]["lag_ms"]["samples"] > 0
    assert report["nats"]["nodes_up"] == 3 and report["nats"]["meta_leader"]
    assert len(report["front_door"]["servers"]) == 6

    result = CliRunner().invoke(app, ["status", "--json", "--state-dir", lab.state_dir])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["healthy"] and printed["endpoints"]["api_key"].startswith("sk-lab-")


def test_request_through_front_door(lab: LabState) -> None:
    with client(lab) as http:
        created = http.post("/v1/sessions", json={})
        assert created.status_code == 201, created.text
        session = created.json()["id"]
        turn = http.post(f"/v1/sessions/{session}/messages", json={"content": "what is 6*7?"})
        assert turn.status_code == 200, turn.text
        assert "42" in turn.json()["reply"]["content"]
        assert turn.headers[SITE_HEADER] in lab.sites
        assert turn.headers[INSTANCE_HEADER].startswith(turn.headers[SITE_HEADER] + "-api-")
        history = http.get(f"/v1/sessions/{session}").json()
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        task = http.post(f"/v1/sessions/{session}/tasks", json={"input": "summarise the session"})
        assert task.status_code == 202, task.text
        status_url = task.json()["status_url"]
        done = eventually(
            lambda: http.get(status_url).json()["status"] == "succeeded", what="the task to succeed"
        )
        assert done
        wrong_key = {"Authorization": "Bearer wrong"}
        assert http.get(f"/v1/sessions/{session}", headers=wrong_key).status_code == 401


def test_site_loss_marks_its_servers_down_and_traffic_continues(lab: LabState) -> None:
    with client(lab) as http:
        session = http.post("/v1/sessions", json={}).json()["id"]
        fault = faults.stop_site(lab.state_dir, "gcp")
        try:
            assert set(fault["killed"]) == {r.name for r in lab.find(site="gcp")}
            served: list[tuple[int, str]] = []

            def gcp_down_and_traffic_flows() -> bool:
                reply = http.post(f"/v1/sessions/{session}/messages", json={"content": "ping"})
                served.append((reply.status_code, reply.headers.get(SITE_HEADER, "")))
                return all(state == "DOWN" for state in site_servers(lab, "gcp").values())

            eventually(gcp_down_and_traffic_flows, what="the front door to mark gcp down")
            for _ in range(10):
                reply = http.post(f"/v1/sessions/{session}/messages", json={"content": "ping"})
                served.append((reply.status_code, reply.headers.get(SITE_HEADER, "")))
            # Requests sent while the front door was still detecting were retried elsewhere.
            assert [s for s in served if s[0] != 200] == []
            assert {site for _, site in served} <= {"aws", "onprem"}
            downs = [e for e in health_events(lab.state_dir, since=fault["time"]) if e["state"] == "DOWN"]
            assert {e["server"] for e in downs if e["site"] == "gcp"} == {"gcp-api-0", "gcp-api-1"}
            # The fail-open twins follow their server's connect check (each on its own check
            # schedule): a retry made while every checked server is down never lands on the
            # dead site's replicas, and the live sites' twins stay up.
            twins = eventually(
                lambda: (
                    (t := fail_open_twins(lab))
                    and all(t[f"gcp-api-{i}"].startswith("DOWN") for i in (0, 1))
                    and t
                ),
                what="both gcp twins DOWN",
            )
            assert {name: state.split()[0] for name, state in twins.items()} == {
                **{f"{site}-api-{i}": "UP" for site in ("aws", "onprem") for i in (0, 1)},
                "gcp-api-0": "DOWN",
                "gcp-api-1": "DOWN",
            }
        finally:
            started = faults.start_site(lab.state_dir, "gcp")  # the lab is shared by later tests
        assert started["started"]
        assert set(site_servers(lab, "gcp").values()) == {"UP"}
        assert faults.start_site(lab.state_dir, "gcp")["started"] == []  # idempotent


def test_primary_site_loss_promotes_a_replica_and_keeps_sessions(lab: LabState) -> None:
    old = redis_primary(lab.state_dir)
    with client(lab) as http:
        session = http.post("/v1/sessions", json={}).json()["id"]
        for i in range(3):
            turn = http.post(f"/v1/sessions/{session}/messages", json={"content": f"turn {i}"})
            assert turn.status_code == 200, turn.text
        faults.stop_site(lab.state_dir, old["site"])
        try:
            new = eventually(
                lambda: (p := _primary_or_none(lab)) and p["site"] != old["site"] and p,
                what="Sentinel to promote a replica",
            )
            assert new["site"] in lab.sites and new["site"] != old["site"]
            history = http.get(f"/v1/sessions/{session}")
            assert history.status_code == 200, history.text
            contents = [m["content"] for m in history.json()["messages"] if m["role"] == "user"]
            assert contents == ["turn 0", "turn 1", "turn 2"]
            after = http.post(f"/v1/sessions/{session}/messages", json={"content": "after the loss"})
            assert after.status_code == 200, after.text
        finally:
            faults.start_site(lab.state_dir, old["site"])  # the lab is shared by later tests
    roles = {n["name"]: n for n in node_roles(load_state(lab.state_dir))}
    assert roles[old["name"]]["role"] == "replica"
    assert roles[old["name"]]["following"] == f"{new['host']}:{new['port']}"


def _primary_or_none(lab: LabState) -> dict[str, Any] | None:
    try:
        return redis_primary(lab.state_dir)
    except Exception:
        return None


def test_component_faults_and_their_undos(lab: LabState) -> None:
    with client(lab) as http:
        session = http.post("/v1/sessions", json={}).json()["id"]

        def turn() -> int:
            return http.post(f"/v1/sessions/{session}/messages", json={"content": "hi"}).status_code

        # One api replica lost: the front door routes around it.
        assert faults.kill_replica(lab.state_dir, "aws", 0)["killed"] == ["aws-api-0"]
        assert faults.kill_replica(lab.state_dir, "aws", 0)["killed"] == []  # idempotent
        eventually(lambda: turn() == 200 and site_servers(lab, "aws")["aws-api-0"] == "DOWN", what="DOWN")
        assert [turn() for _ in range(5)] == [200] * 5
        faults.restart_replica(lab.state_dir, "aws", 0)
        assert site_servers(lab, "aws")["aws-api-0"] == "UP"

        # A hung replica (SIGSTOP) shows as paused, and runs again after SIGCONT.
        assert faults.pause_replica(lab.state_dir, "onprem", 1)["paused"] == ["onprem-api-1"]
        assert _process(lab, "onprem-api-1")["state"] == "paused"
        assert faults.resume_replica(lab.state_dir, "onprem", 1)["resumed"] == ["onprem-api-1"]
        assert _process(lab, "onprem-api-1")["state"] == "running"

        # The Redis primary alone: a replica is promoted, the old one comes back as a replica.
        killed = faults.kill_redis_primary(lab.state_dir)
        eventually(lambda: (p := _primary_or_none(lab)) and p["name"] != killed["primary"], what="promotion")
        assert turn() == 200
        faults.restore_redis(lab.state_dir)
        roles = {n["name"]: n["role"] for n in node_roles(load_state(lab.state_dir))}
        assert roles[killed["primary"]] == "replica" and list(roles.values()).count("primary") == 1

        # A site's NATS node: tasks still flow through the other nodes of the cluster.
        # Publishes fail (503) until JetStream has re-elected any stream leader the node held;
        # a client retries on 503, as it is told to.
        faults.stop_broker(lab.state_dir, "gcp")
        task = eventually(
            lambda: (
                (r := http.post(f"/v1/sessions/{session}/tasks", json={"input": "broker out"})).status_code
                == 202
                and r
            ),
            what="a task to be accepted with gcp's NATS node down",
        )
        url = task.json()["status_url"]
        eventually(lambda: http.get(url).json()["status"] == "succeeded", what="the task to succeed")
        faults.start_broker(lab.state_dir, "gcp")
        assert lab_status(lab.state_dir)["nats"]["nodes_up"] == 3


def _process(lab: LabState, name: str) -> dict[str, Any]:
    return next(p for p in lab_status(lab.state_dir)["processes"] if p["name"] == name)


def test_a_second_lab_coexists(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two sites with failover routing, on other ports and another state folder."""
    config = LabConfig(
        sites=["east", "west"],
        state_dir=tmp_path_factory.mktemp("lab2"),
        base_port=free_base_port(),
        routing="failover",
    )
    second = up(config)
    try:
        assert not set(second.ports) & set(lab.ports)
        report = lab_status(second.state_dir)
        assert report["healthy"], json.dumps(report, indent=1)[:3000]
        # The witness keeps a majority for Sentinel and JetStream with only two sites.
        assert {p["name"] for p in report["processes"]} >= {
            "witness-redis",
            "witness-sentinel",
            "witness-nats",
        }
        backups = {s["server"]: s["backup"] for s in server_states(second.state_dir)}
        assert backups == {"east-api-0": False, "east-api-1": False, "west-api-0": True, "west-api-1": True}
        with client(second) as http:
            reply = http.post("/v1/sessions", json={})
            assert reply.status_code == 201 and reply.headers[SITE_HEADER] == "east"
        assert lab_status(lab.state_dir)["healthy"]
    finally:
        result = down(second.state_dir)
    assert result["ports_free"] and marked_pids(second.state_dir) == []
    assert lab_status(lab.state_dir)["healthy"]


def test_down_stops_everything_and_frees_the_ports(lab: LabState) -> None:
    assert marked_pids(lab.state_dir)  # the lab runs, so the check below can fail
    result = down(lab.state_dir)
    assert len(result["stopped"]) == len(lab.processes)
    assert result["orphans_killed"] == []
    assert marked_pids(lab.state_dir) == []
    assert busy_ports(lab.ports) == []
    assert load_state(lab.state_dir).phase == "down"
    assert down(lab.state_dir)["stopped"] == []  # idempotent
    with pytest.raises(LabError, match="not up"):
        faults.start_site(lab.state_dir, "aws")
