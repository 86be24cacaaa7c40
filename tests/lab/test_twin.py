"""The twin runs what the shipped prod plans deploy, and serves as they would.

Every app container is compared with its plan resource from a fresh offline plan (not with the
lab's own reading of it): the environment verbatim except the endpoint rewrites the lab prints,
secrets delivered where the platform delivers them, the plan's user, a read-only root.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent_app.contract import SITE_HEADER, Env
from skyfleet.lab.state import LabState, load_state, read_api_keys
from skyfleet.lab.status import lab_status
from skyfleet.plan import Plan
from skyfleet.plan.cli import plan_all
from tests.support.twin import ROOT, client, eventually, site_name

ORIGIN = re.compile(r"^(?P<stack>[^:]+): (?P<type>\S+) '(?P<name>[^']+)', container '(?P<container>[^']+)'$")


@pytest.fixture(scope="module")
def plans(twin: LabState) -> dict[str, Plan]:
    stacks = [s.stack for s in twin.sites.values()] + ([twin.edge.stack] if twin.edge else [])
    return {p.stack: p for p, _ in plan_all(ROOT, stacks)}


def _containers(resource: Any) -> list[dict[str, Any]]:
    inputs = resource.inputs
    if resource.type == "aws:ecs/taskDefinition:TaskDefinition":
        defs = inputs["containerDefinitions"]
        return json.loads(defs) if isinstance(defs, str) else defs
    if resource.type == "gcp:cloudrunv2/service:Service":
        return inputs["template"]["containers"]
    return inputs["spec"]["template"]["spec"]["containers"]


def planned_container(plan: Plan, typ: str, name: str, container: str) -> tuple[Any, dict[str, Any]]:
    (resource,) = [r for r in plan.resources if r.type == typ and r.name == name]
    found = [c for c in _containers(resource) if c.get("name", container) == container]
    assert len(found) == 1, f"{typ} {name!r}: container {container!r} not in the plan"
    return resource, found[0]


def planned_env(typ: str, c: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """Plain values and the names of secret-sourced variables, as the plan gives them."""
    plain: dict[str, str] = {}
    secret: set[str] = set()
    if typ.startswith("aws:ecs"):
        plain = {e["name"]: str(e["value"]) for e in c.get("environment") or []}
        secret = {s["name"] for s in c.get("secrets") or []}
    else:
        for e in c.get("env") or c.get("envs") or []:
            if "value" in e and e["value"] is not None:
                plain[e["name"]] = str(e["value"])
            else:
                secret.add(e["name"])
    return plain, secret


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def read_inside(pid: int, path: str) -> str:
    """A file as the process sees it (its mount namespace and root; symlinks resolved there)."""
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-r", "cat", path], capture_output=True, text=True, check=True
    ).stdout


def planned_uid(typ: str, resource: Any, c: dict[str, Any]) -> int:
    if typ.startswith("aws:ecs"):
        return int(str(c["user"]).split(":")[0])
    if typ.startswith("kubernetes"):
        ctx = {**(resource.inputs["spec"]["template"]["spec"].get("securityContext") or {}),
               **(c.get("securityContext") or {})}  # fmt: skip
        return int(ctx["runAsUser"])
    return -1  # Cloud Run: the image's USER


def planned_read_only(typ: str, c: dict[str, Any]) -> bool:
    """ECS and Kubernetes say; Cloud Run's root is always a writable in-memory file system."""
    if typ.startswith("aws:ecs"):
        return c.get("readonlyRootFilesystem") is True
    if typ.startswith("kubernetes"):
        return (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is True
    return False


def test_status_is_healthy_and_says_how_it_differs(twin: LabState) -> None:
    report = lab_status(twin.state_dir)
    assert report["healthy"], [p for p in report["processes"] if p["state"] != "running"]
    assert report["endpoints"]["global_name"] == "api.agents.example.com"
    # The only env rewrites are endpoints that cannot be served as planned (a VPC address, the
    # Pub/Sub API over plain gRPC), each named.
    assert report["rewrites"] and all(r["what"] and r["plan"] != r["lab"] for r in report["rewrites"])
    assert {r["site"] for r in report["rewrites"]} == {"gcp-prod"}
    assert any("Cloud Armor" in d for d in report["deviations"])
    # What the lab chose where the plan says nothing (the sites' load balancers) is said too.
    assert any(d.startswith("gcp-prod: Cloud Run's routing to live instances") for d in report["deviations"])
    assert any(d.startswith("onprem-prod: ingress-nginx's own defaults") for d in report["deviations"])
    assert report["capped"] == {}


def test_app_containers_run_as_their_plans_say(twin: LabState, plans: dict[str, Plan]) -> None:
    state = load_state(twin.state_dir)
    rewrites = [r for r in state.rewrites]
    keys = read_api_keys(twin.state_dir)
    checked = 0
    for rec in state.processes:
        if rec.container not in ("api", "worker") or rec.origin is None:
            continue
        m = ORIGIN.match(rec.origin)
        assert m, rec.origin
        resource, c = planned_container(plans[m["stack"]], m["type"], m["name"], m["container"])
        plain, secret = planned_env(m["type"], c)
        assert rec.pid is not None
        env = environ(rec.pid)
        for name, value in plain.items():
            for r in rewrites:
                if r.site == rec.site:
                    value = value.replace(r.plan, r.lab)
            assert env.get(name) == value, f"{rec.name}: {name}"
        for name in secret:
            assert env.get(name), f"{rec.name}: secret {name} not delivered"
        # No app setting the plan does not give (the lab adds only the platform's own variables).
        extra = {k for k in env if k.startswith("AGENT_")} - set(plain) - secret
        assert extra == set(), f"{rec.name}: {extra}"
        # The client keys: as a variable (ECS) or a file at the plan's mount path, in the
        # process's own root.
        if rec.container == "api":
            if Env.API_KEYS_FILE.value in env:
                text = read_inside(rec.pid, env[Env.API_KEYS_FILE.value])
            else:
                text = env[Env.API_KEYS.value]
            assert set(re.split(r"[,\s]+", text.strip())) == set(keys)
        else:
            assert Env.API_KEYS.value not in env and Env.API_KEYS_FILE.value not in env
        uid = planned_uid(m["type"], resource, c)
        status = Path(f"/proc/{rec.pid}/status").read_text()
        real = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
        assert real == uid if uid >= 0 else real != 0, f"{rec.name}: uid {real}"
        root = next(ln.split() for ln in Path(f"/proc/{rec.pid}/mountinfo").read_text().splitlines()
                    if ln.split()[4] == "/")  # fmt: skip
        assert ("ro" in root[5].split(",")) == planned_read_only(m["type"], c), f"{rec.name}: root {root[5]}"
        checked += 1
    assert checked >= 12  # api and worker replicas of three sites


@pytest.mark.parametrize("site", ["aws-prod", "gcp-prod", "onprem-prod"])
def test_each_site_serves_sessions_and_runs_tasks_by_its_own_name(twin: LabState, site: str) -> None:
    with client(twin, site_name(twin, site)) as http:
        created = http.post("/v1/sessions", json={})
        assert created.status_code == 201, created.text
        assert created.headers[SITE_HEADER] == site
        sid = created.json()["id"]
        turn = http.post(f"/v1/sessions/{sid}/messages", json={"content": "what is 2 + 2?"})
        assert turn.status_code == 200, turn.text
        task = http.post(f"/v1/sessions/{sid}/tasks", json={"input": "summarise"})
        assert task.status_code == 202, task.text
        url = task.json()["status_url"]
        done = eventually(
            lambda: (r := http.get(url).json())["status"] in ("succeeded", "failed") and r,
            what=f"{site}'s worker to run the task",
        )
        assert done["status"] == "succeeded", done


def test_the_global_name_reaches_the_primary_and_every_site_reaches_its_sessions(twin: LabState) -> None:
    with client(twin) as http:
        created = http.post("/v1/sessions", json={})
        assert created.status_code == 201 and created.headers[SITE_HEADER] == "aws-prod"
        sid = created.json()["id"]
    # The sites form one fleet (stacks/environments/fleet-prod.yaml): whichever site a request
    # reaches, the session's home (aws-prod) serves it, over the sites' regional names.
    for other in ("gcp-prod", "onprem-prod"):
        with client(twin, site_name(twin, other)) as http:
            turn = http.post(f"/v1/sessions/{sid}/messages", json={"content": f"hello from {other}"})
            assert turn.status_code == 200, turn.text
            assert turn.headers[SITE_HEADER] == "aws-prod"
    with client(twin, site_name(twin, "gcp-prod")) as http:
        got = http.get(f"/v1/sessions/{sid}")
        assert got.status_code == 200 and got.headers[SITE_HEADER] == "aws-prod"
        assert [m["content"] for m in got.json()["messages"] if m["role"] == "user"] == [
            "hello from gcp-prod",
            "hello from onprem-prod",
        ]


def test_a_client_key_outside_the_stacks_secret_is_refused(twin: LabState) -> None:
    with client(twin) as http:
        refused = http.post(
            "/v1/sessions", json={}, headers={"Authorization": "Bearer sk-lab-not-one-of-ours"}
        )
        assert refused.status_code == 401
