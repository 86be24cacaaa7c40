"""Task delivery across sites: the sites' nats-server nodes form ONE JetStream cluster.

The app creates its stream with ``replicas = min(3, nodes)``, so every accepted task is stored
on a majority of nodes in different sites and survives the loss of any one site. With two
sites a witness node keeps the RAFT majority, as a third zone would in a cloud.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_app.contract import nats_queue_url
from skyfleet.lab import probe
from skyfleet.lab.procs import ProcessRecord, Role, is_running
from skyfleet.lab.state import LabState

STREAM = "SKYFLEET_TASKS"
SUBJECT = "agent.tasks"
DLQ_SUBJECT = "agent.tasks.dlq"
MAX_DELIVER = 5


def render_nats_conf(
    *,
    server_name: str,
    host: str,
    port: int,
    monitor_port: int,
    cluster_port: int,
    cluster_name: str,
    routes: list[str],
    store_dir: Path,
) -> str:
    """One JetStream node; ``routes`` are the other nodes' cluster addresses (host:port)."""
    lines = [
        f'server_name: "{server_name}"',
        f'host: "{host}"',
        f"port: {port}",
        f'http: "{host}:{monitor_port}"',
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        "  max_memory_store: 64MB",
        "  max_file_store: 512MB",
        "}",
    ]
    if routes:
        lines += [
            "cluster {",
            f'  name: "{cluster_name}"',
            f'  host: "{host}"',
            f"  port: {cluster_port}",
            "  routes: [",
            *[f"    nats-route://{route}" for route in routes],
            "  ]",
            "}",
        ]
    return "\n".join(lines) + "\n"


def queue_url(local: ProcessRecord, nodes: list[ProcessRecord]) -> str:
    """AGENT_QUEUE_URL for a site: its own node first, then every other node."""
    ordered = [local, *[n for n in nodes if n.name != local.name]]
    hosts = ",".join(f"{n.host}:{n.ports['client']}" for n in ordered)
    return nats_queue_url(
        hosts, stream=STREAM, subject=SUBJECT, dlq_subject=DLQ_SUBJECT, max_deliver=MAX_DELIVER
    )


def monitor(rec: ProcessRecord, path: str, timeout: float = 0.5) -> dict[str, Any] | None:
    """GET a monitoring endpoint of a node; None if it does not answer."""
    return probe.get_json(rec.host, rec.ports["monitor"], path, timeout)


def node_ready(rec: ProcessRecord, cluster_size: int) -> bool:
    """Serving, and (in a cluster) routed to every peer with a JetStream meta leader elected."""
    health = monitor(rec, "/healthz?js-enabled-only=true")
    if health is None:
        return False
    if cluster_size <= 1:
        return True
    jsz = monitor(rec, "/jsz")
    routez = monitor(rec, "/routez")
    if not jsz or not routez:
        return False
    leader = (jsz.get("meta_cluster") or {}).get("leader")
    return bool(leader) and int(routez.get("num_routes", 0)) >= cluster_size - 1


def cluster_status(state: LabState) -> dict[str, Any]:
    nodes = state.find(role=Role.NATS)
    out: list[dict[str, Any]] = []
    leader = None
    for rec in nodes:
        node: dict[str, Any] = {
            "name": rec.name,
            "site": rec.site,
            "address": f"{rec.host}:{rec.ports['client']}",
        }
        if not is_running(rec):
            out.append({**node, "state": "down"})
            continue
        jsz = monitor(rec, "/jsz?streams=true")
        routez = monitor(rec, "/routez")
        if jsz is None:
            out.append({**node, "state": "unreachable"})
            continue
        meta = jsz.get("meta_cluster") or {}
        leader = leader or meta.get("leader")
        node.update(
            state="up",
            routes=int((routez or {}).get("num_routes", 0)),
            streams=jsz.get("streams", 0),
            messages=jsz.get("messages", 0),
        )
        out.append(node)
    return {
        "cluster_size": len(nodes),
        "meta_leader": leader,
        "nodes_up": sum(1 for n in out if n["state"] == "up"),
        "nodes": out,
    }
