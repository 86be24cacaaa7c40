"""``skyfleet lab status``: what the twin runs, what is healthy, and every way it differs from
the plans (endpoint rewrites, replica caps, what it runs differently or not at all)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from skyfleet.lab import caches, edge, faults, names, twin
from skyfleet.lab.errors import LabError
from skyfleet.lab.procs import ProcessRecord, Role, is_running, is_stopped
from skyfleet.lab.state import load_state


def process_state(rec: ProcessRecord) -> str:
    """running, paused (SIGSTOP), stopped (on purpose, by a fault or down) or dead (unexpected)."""
    if is_running(rec):
        return "paused" if is_stopped(rec) else "running"
    return "stopped" if not rec.wanted or rec.pid is None else "dead"


def lab_status(state_dir: str) -> dict[str, Any]:
    """Everything ``status --json`` prints; also a probe for drills (``healthy`` sums it up)."""
    state = load_state(state_dir)
    live = [r for r in state.processes if not r.init]
    containers = [r for r in live if r.role == Role.CONTAINER and is_running(r)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ready = dict(
            zip([r.name for r in containers], pool.map(twin.container_ready, containers), strict=True)
        )
    processes = [
        {
            "name": r.name,
            "role": r.role.value,
            "site": r.site,
            "pod": r.pod,
            "pid": r.pid,
            "state": process_state(r),
            "address": f"{r.host}:{','.join(str(p) for p in r.ports.values())}" if r.ports else r.host,
            **({"ready": ready[r.name]} if r.name in ready else {}),
        }
        for r in live
    ]
    sites = []
    for name, site in state.sites.items():
        own = [p for p in processes if p["site"] == name]
        try:
            backends = faults.backends(state, name) if state.phase == "up" else {}
        except (LabError, OSError):
            backends = {}
        endpoints = {}
        for endpoint in site.endpoints:
            try:
                endpoints[endpoint] = names.lookup(Path(site.hosts_file), endpoint)
            except OSError:
                endpoints[endpoint] = []
        sites.append(
            {
                "name": name,
                "stack": site.stack,
                "target": site.target,
                "load_balancer": {"address": site.lb_address, "names": site.lb_names, "backends": backends},
                "managed_endpoints": endpoints,
                "processes": len(own),
                "processes_running": sum(1 for p in own if p["state"] == "running"),
                # Its cache's Sentinels know every replica: a lost primary has one to promote.
                "cache_set_known": caches.set_known(state, name) if state.phase == "up" else False,
            }
        )
    # A site the lab runs is back in the edge's rotation only once its checks pass again (a
    # failback takes the failure threshold × the interval): until then the lab is not settled.
    edge_health = edge.site_health(state_dir) if state.edge is not None and state.phase == "up" else {}
    healthy = (
        state.phase == "up"
        and all(ok for site, ok in edge_health.items() if site in state.sites)
        and all(p["state"] == "running" for p in processes)
        and all(ready.values())
        and all(b.startswith("UP") for s in sites for b in s["load_balancer"]["backends"].values())
        and all(s["cache_set_known"] for s in sites)
    )
    return {
        "lab_id": state.lab_id,
        "state_dir": state.state_dir,
        "phase": state.phase,
        "healthy": healthy,
        "stacks": [s.stack for s in state.sites.values()] + ([state.edge.stack] if state.edge else []),
        "edge": {**state.edge.model_dump(), "health": edge_health} if state.edge else None,
        "endpoints": {
            "global_name": state.edge.fqdn if state.edge else None,
            "dns": f"{state.edge.dns_address}:{state.edge.dns_port}" if state.edge else None,
            "ca_file": state.public_ca_file,
            "api_key_file": state.api_key_file,
        },
        "sites": sites,
        "processes": processes,
        # Every way the lab differs from the plans, said out loud.
        "rewrites": [r.model_dump() for r in state.rewrites],
        "capped": {k: {"planned": v[0], "running": v[1]} for k, v in state.capped.items()},
        "deviations": state.deviations,
        "not_run": state.not_run,
        "logs": str(Path(state.state_dir) / "logs"),
    }
