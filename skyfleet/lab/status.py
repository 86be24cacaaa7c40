"""``skyfleet lab status``: what runs, what is healthy, who is primary, and how far behind."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from skyfleet.lab import broker, replication
from skyfleet.lab.errors import LabError
from skyfleet.lab.frontdoor import server_states
from skyfleet.lab.lifecycle import http_ready
from skyfleet.lab.procs import ProcessRecord, Role, is_running, is_stopped
from skyfleet.lab.state import load_state


def process_state(rec: ProcessRecord) -> str:
    """running, paused (SIGSTOP), stopped (on purpose, by a fault or down) or dead (unexpected)."""
    if is_running(rec):
        return "paused" if is_stopped(rec) else "running"
    return "stopped" if not rec.wanted or rec.pid is None else "dead"


def lab_status(state_dir: str, *, lag_window_seconds: float = 0.3) -> dict[str, Any]:
    """Everything ``status --json`` prints; also a probe for drills (``healthy`` is the summary)."""
    state = load_state(state_dir)
    config = state.lab_config
    apis = state.find(role=Role.API)
    with ThreadPoolExecutor(max_workers=8) as pool:
        ready = dict(zip([r.name for r in apis], pool.map(http_ready, apis), strict=True))
    processes = [
        {
            "name": rec.name,
            "role": rec.role.value,
            "site": rec.site,
            "pid": rec.pid,
            "state": process_state(rec),
            "address": f"{rec.host}:{','.join(str(p) for p in rec.ports.values())}",
            **({"ready": ready[rec.name]} if rec.name in ready else {}),
        }
        for rec in state.processes
    ]
    door = next(iter(state.find(role=Role.FRONTDOOR)), None)
    servers: list[dict[str, Any]] = []
    if door and is_running(door):
        try:
            servers = server_states(state_dir)
        except LabError:
            servers = []
    redis_info: dict[str, Any] = {"nodes": replication.node_roles(state) if state.phase != "down" else []}
    if state.phase != "down":
        try:
            redis_info["primary"] = replication.redis_primary(state_dir)
        except LabError as exc:
            redis_info["primary"] = None
            redis_info["error"] = str(exc)
        if redis_info["primary"] and len(state.find(role=Role.REDIS)) > 1:
            try:
                redis_info["lag_ms"] = replication.sample_lag(
                    state_dir, window_seconds=lag_window_seconds, interval_ms=100
                )
            except LabError as exc:
                redis_info["lag_ms"] = {"error": str(exc)}
    nats = broker.cluster_status(state) if state.phase != "down" else {"nodes": []}
    sites = []
    for site in config.sites:
        own = [p for p in processes if p["site"] == site]
        sites.append(
            {
                "name": site,
                "processes_running": sum(1 for p in own if p["state"] == "running"),
                "processes": len(own),
                "replicas_ready": sum(1 for p in own if p.get("ready")),
                "front_door_up": sum(1 for s in servers if s["site"] == site and s["status"] == "UP"),
                "address": state.network.sites[site].address if state.network else "127.0.0.1",
                "namespace": state.network.sites[site].namespace if state.network else None,
            }
        )
    healthy = (
        state.phase == "up"
        and all(p["state"] == "running" for p in processes)
        and all(ready.values())
        and bool(servers)
        and all(s["status"] == "UP" for s in servers)
        and bool(redis_info.get("primary"))
        # exactly one primary, every other node replicating it (no split brain after a partition)
        and sum(1 for n in redis_info["nodes"] if n["role"] == "primary") == 1
        and all(n.get("link") == "up" for n in redis_info["nodes"] if n["role"] == "replica")
        and nats.get("nodes_up") == nats.get("cluster_size")
    )
    return {
        "lab_id": state.lab_id,
        "state_dir": state.state_dir,
        "phase": state.phase,
        "healthy": healthy,
        "routing": config.routing.value,
        "mode": "netns" if state.network else "loopback",
        "endpoints": {
            "front_door": state.front_door.https_url or state.front_door.http_url,
            "https_url": state.front_door.https_url,
            "http_url": state.front_door.http_url,
            "ca_file": state.front_door.ca_file,
            "api_key_file": state.api_key_file,
            "admin_socket": state.front_door.admin_socket,
            "front_door_log": state.front_door.log_file,
        },
        "sites": sites,
        "processes": processes,
        "front_door": {"servers": servers},
        "redis": redis_info,
        "nats": nats,
        "logs": str(Path(state.state_dir) / "logs"),
    }
