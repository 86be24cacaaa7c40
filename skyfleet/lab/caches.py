"""A site's cache servers in the lab: which processes they are, how to reach them (their own
AUTH and CA), their roles, and whether their Sentinels know the whole set."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import redis

from skyfleet.lab.procs import ProcessRecord, Role, is_running
from skyfleet.lab.state import LabState

SENTINEL_PORT = 26379


def nodes(state: LabState, site: str) -> list[ProcessRecord]:
    """A site's cache servers: a managed cache's nodes, or an on-prem Redis StatefulSet's pods."""
    managed = [r for r in state.find(site=site, role=Role.SERVICE) if r.ports.get("cache")]
    pods = [r for r in state.find(site=site, role=Role.CONTAINER) if r.container == "redis"]
    return managed or pods


def credentials(rec: ProcessRecord, state: LabState) -> tuple[str | None, str | None]:
    """The AUTH password and CA file of a cache process, from its own config."""
    conf = next((a for a in rec.argv if a.endswith(".conf")), None)
    if rec.role == Role.SERVICE and conf:
        # Redis rewrites its config on a failover, quoting values.
        settings = {
            ln.split(None, 1)[0]: ln.split(None, 1)[1].strip().strip('"')
            for ln in Path(conf).read_text(encoding="utf-8").splitlines()
            if len(ln.split(None, 1)) == 2 and not ln.startswith("#")
        }
        return settings.get("requirepass"), settings.get("tls-ca-cert-file")
    if rec.role == Role.CONTAINER and rec.container == "redis":
        spec = json.loads(Path(rec.argv[-1]).read_text(encoding="utf-8"))
        password = spec["env"].get("REDISCLI_AUTH") or spec["env"].get("REDIS_PASSWORD")
        tls = next((m["source"] for m in spec["mounts"] if m["target"].endswith("/tls")), None)
        return password, f"{tls}/ca.crt" if tls else None
    return None, None


def _client(host: str, port: int, password: str | None, ca: str | None) -> redis.Redis:
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        ssl=True,
        ssl_ca_certs=ca,
        ssl_check_hostname=False,
        socket_timeout=1,
        socket_connect_timeout=1,
    )


def role(rec: ProcessRecord, state: LabState) -> str | None:
    """``master`` or ``slave`` for a cache process (managed node or on-prem pod), else None."""
    password, ca = credentials(rec, state)
    if password is None:
        return None
    try:
        with contextlib.closing(_client(rec.host, rec.port, password, ca)) as client:
            return str(client.info("replication").get("role"))
    except (redis.RedisError, OSError):
        return None


def _sentinels(state: LabState, site: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The running Sentinels of a site's cache (address, port), and the AUTH and CA to ask them."""
    running = [r for r in nodes(state, site) if is_running(r)]
    if not running:
        return [], None, None
    if running[0].role == Role.SERVICE:
        # The managed cache's Sentinels: the lab's stand-in for the provider's failover.
        sentinels = [r for r in state.find(site=site, role=Role.SERVICE) if "sentinel" in r.ports]
        return (
            [(r.host, r.ports["sentinel"]) for r in sentinels if is_running(r)],
            None,
            credentials(running[0], state)[1],
        )
    # The stack's own Sentinel beside each Redis pod (AUTH as the pod's Redis).
    password, ca = credentials(running[0], state)
    hosts = [
        (r.host, SENTINEL_PORT)
        for r in state.find(site=site, role=Role.CONTAINER)
        if r.container == "sentinel" and is_running(r)
    ]
    return hosts, password, ca


def set_known(state: LabState, site: str) -> bool:
    """Whether every running Sentinel of the site's cache knows each running replica as up.

    Sentinel learns a primary's replicas from the primary's INFO, every 10 s: a primary lost
    before that finds no replica to promote (``-failover-abort-no-good-slave``). A real set has
    run for longer than that by the time anyone loses a node; the lab waits for it the same way.
    A site without Sentinels (a single node) is known at once."""
    running = [r for r in nodes(state, site) if is_running(r)]
    hosts, password, ca = _sentinels(state, site)
    if len(running) < 2 or not hosts:
        return True
    for host, port in hosts:
        try:
            with contextlib.closing(_client(host, port, password, ca)) as client:
                for name in client.sentinel_masters():
                    replicas = client.sentinel_slaves(name)
                    up = [r for r in replicas if not (r["is_sdown"] or r["is_odown"] or r["is_disconnected"])]
                    if len(up) < len(running) - 1:
                        return False
        except (redis.RedisError, OSError):
            return False
    return True


def sentinels_agree(state: LabState, site: str) -> str | None:
    """The primary every running Sentinel of the site names (its address as they give it), or
    None while they disagree or cannot be asked (a failover spreading)."""
    hosts, password, ca = _sentinels(state, site)
    named: set[str | None] = set()
    for host, port in hosts:
        try:
            with contextlib.closing(_client(host, port, password, ca)) as client:
                for name in client.sentinel_masters():
                    address: Any = client.sentinel_get_master_addr_by_name(name)
                    primary = address[0] if address else None
                    named.add(primary.decode() if isinstance(primary, bytes) else primary)
        except (redis.RedisError, OSError):
            return None
    return named.pop() if len(named) == 1 else None
