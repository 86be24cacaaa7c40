"""Session replication across sites: Redis primary/replicas, Sentinel failover, and lag.

One site's Redis is the primary and every other site's Redis replicates it, the lab's
stand-in for ElastiCache Global Datastore or Memorystore cross-region replicas. One Sentinel
per site (plus a witness with two sites) promotes a surviving replica when the primary's site
is lost; the apps find the primary through the Sentinels and WAIT for one replica, so an
acknowledged turn already exists in another site.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from agent_app.contract import REPLICATED_KEY_PREFIX
from skyfleet.lab.errors import LabError
from skyfleet.lab.procs import ProcessRecord, Role, is_running
from skyfleet.lab.state import LabState, load_state

PROBE_PREFIX = f"{REPLICATED_KEY_PREFIX}lab:lag-probe:"
_TIMEOUT = 0.5


# A primary that has heard from none of its replicas for this long stops taking writes.
MIN_REPLICAS_MAX_LAG_SECONDS = 2


def render_redis_conf(
    *,
    host: str,
    port: int,
    data_dir: Path,
    password: str,
    replica_of: tuple[str, int] | None,
    priority: int,
    min_replicas: int = 0,
) -> str:
    """A cache node: no persistence (replicas are the durability), fast diskless full syncs.

    ``min_replicas`` is the split-brain guard Sentinel's documentation recommends: a primary
    cut off from every replica (the stale side of a partition) refuses writes after
    ``MIN_REPLICAS_MAX_LAG_SECONDS`` instead of answering as if it were still the primary,
    until Sentinel demotes it when the partition heals. Every node gets it, since any of
    them can be promoted.
    """
    lines = [
        f"bind {host}",
        f"port {port}",
        "daemonize no",
        # Keep argv and environ intact: a retitled process would hide the lab's marker.
        "set-proc-title no",
        'logfile ""',
        f'dir "{data_dir}"',
        f"requirepass {password}",
        f"masterauth {password}",
        'save ""',
        "appendonly no",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        "repl-diskless-load swapdb",
        f"replica-priority {priority}",
        "replica-serve-stale-data yes",
        "maxmemory 128mb",
        "maxmemory-policy noeviction",
    ]
    if min_replicas:
        lines += [
            f"min-replicas-to-write {min_replicas}",
            f"min-replicas-max-lag {MIN_REPLICAS_MAX_LAG_SECONDS}",
        ]
    if replica_of:
        lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
    return "\n".join(lines) + "\n"


def render_sentinel_conf(
    *,
    host: str,
    port: int,
    data_dir: Path,
    master_name: str,
    primary: tuple[str, int],
    quorum: int,
    password: str,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> str:
    """A Sentinel with short timings, so a lost primary is replaced within about 3 s."""
    return "\n".join(
        [
            f"bind {host}",
            f"port {port}",
            "daemonize no",
            "set-proc-title no",
            'logfile ""',
            f'dir "{data_dir}"',
            f"requirepass {password}",
            f"sentinel sentinel-pass {password}",
            f"sentinel monitor {master_name} {primary[0]} {primary[1]} {quorum}",
            f"sentinel auth-pass {master_name} {password}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master_name} 4",
            "",
        ]
    )


def password_of(state: LabState) -> str:
    from skyfleet.lab.credentials import REDIS_PASSWORD_FILE

    return (Path(state.secrets_dir) / REDIS_PASSWORD_FILE).read_text(encoding="utf-8").strip()


def client(host: str, port: int, password: str, timeout: float = _TIMEOUT) -> redis.Redis:
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def ping(host: str, port: int, password: str) -> bool:
    try:
        with client(host, port, password) as conn:
            return bool(conn.ping())
    except (redis.RedisError, OSError):
        return False


def primary_address(state: LabState) -> tuple[str, int] | None:
    """The primary by the Sentinels' newest configuration (highest config epoch).

    A Sentinel that was cut off may still name the old primary; the epoch settles it, as it
    does for the Sentinels themselves.
    """
    password = password_of(state)
    best: tuple[int, tuple[str, int]] | None = None
    for rec in state.find(role=Role.SENTINEL):
        if not is_running(rec):
            continue
        try:
            with client(rec.host, rec.port, password) as conn:
                info = conn.execute_command("SENTINEL", "MASTER", state.redis_master_name)
        except (redis.RedisError, OSError):
            continue
        if isinstance(info, list):  # older redis-py returns the flat list
            info = dict(zip(info[::2], info[1::2], strict=False))
        if not isinstance(info, dict) or "ip" not in info:
            continue
        epoch = int(info.get("config-epoch", 0))
        if best is None or epoch > best[0]:
            best = (epoch, (str(info["ip"]), int(info["port"])))
    return best[1] if best else None


def redis_primary(state_dir: str) -> dict[str, Any]:
    """The current Redis primary: ``{"site", "name", "host", "port"}`` (asked of the Sentinels)."""
    state = load_state(state_dir)
    addr = primary_address(state)
    if addr is None:
        raise LabError(f"no Sentinel of the lab at {state_dir} knows a Redis primary")
    for rec in state.find(role=Role.REDIS):
        if (rec.host, rec.port) == addr:
            return {"site": rec.site, "name": rec.name, "host": rec.host, "port": rec.port}
    raise LabError(f"the Sentinels name {addr[0]}:{addr[1]} as primary, which is not a lab Redis")


def node_roles(state: LabState) -> list[dict[str, Any]]:
    """Every Redis node: its role, whom it follows, link state and replication offsets."""
    password = password_of(state)
    nodes = []
    for rec in state.find(role=Role.REDIS):
        node: dict[str, Any] = {"name": rec.name, "site": rec.site, "address": f"{rec.host}:{rec.port}"}
        if not is_running(rec):
            nodes.append({**node, "role": "down"})
            continue
        try:
            with client(rec.host, rec.port, password) as conn:
                info = conn.info("replication")
        except (redis.RedisError, OSError) as exc:
            nodes.append({**node, "role": "unreachable", "error": str(exc)})
            continue
        node["role"] = "primary" if info.get("role") == "master" else "replica"
        node["offset"] = info.get("master_repl_offset")
        if node["role"] == "replica":
            node["following"] = f"{info.get('master_host')}:{info.get('master_port')}"
            node["link"] = info.get("master_link_status")
        else:
            node["connected_replicas"] = info.get("connected_slaves", 0)
        nodes.append(node)
    primary = next((n for n in nodes if n["role"] == "primary"), None)
    if primary:
        for node in nodes:
            if node["role"] == "replica" and isinstance(node.get("offset"), int):
                node["bytes_behind"] = max(0, primary["offset"] - node["offset"])
    return nodes


def _writable_topology(state: LabState, password: str) -> tuple[ProcessRecord, list[ProcessRecord]] | None:
    """The primary (as the Sentinels say, and confirmed by its own ROLE) and its live replicas."""
    addr = primary_address(state)
    nodes = [r for r in state.find(role=Role.REDIS) if is_running(r)]
    primary = next((r for r in nodes if (r.host, r.port) == addr), None)
    if primary is None:
        return None
    try:
        with client(primary.host, primary.port, password) as conn:
            if conn.info("replication").get("role") != "master":
                return None  # a demoted node the Sentinels have not caught up with yet
    except (redis.RedisError, OSError):
        return None
    return primary, [r for r in nodes if r.name != primary.name]


def sample_lag(state_dir: str, window_seconds: float = 5.0, interval_ms: int = 100) -> dict[str, Any]:
    """Replication lag in ms, measured by timestamped probe keys seen on every replica.

    Each probe is written on the primary and polled on every reachable replica until it
    appears (or 2 s pass: counted as ``lost``). Returns p50/p99/max over all samples and
    per replica, and the raw ``samples_ms`` (so callers can merge windows). This is the lab's
    RPO exposure: what a site loss could take with it. During a failover, probes that cannot
    be written are counted as ``skipped`` and the primary is looked up again.
    """
    state = load_state(state_dir)
    password = password_of(state)
    samples: dict[str, list[float]] = {}
    lost = skipped = 0
    deadline = time.monotonic() + window_seconds
    topology = _writable_topology(state, password)
    if topology is None:
        raise LabError(f"no writable Redis primary in the lab at {state_dir} right now")
    while time.monotonic() < deadline:
        started = time.perf_counter()
        if topology is None:
            topology = _writable_topology(state, password)
        if topology is None:
            skipped += 1
        else:
            try:
                lost += _probe(topology, password, samples)
            except (redis.RedisError, OSError):
                skipped += 1
                topology = None
        time.sleep(max(0.0, interval_ms / 1000 - (time.perf_counter() - started)))
    everything = [v for values in samples.values() for v in values]
    return {
        **_percentiles(everything),
        "samples_ms": [round(v, 3) for v in everything],
        "lost": lost,
        "skipped": skipped,
        "replicas": {name: _percentiles(values) for name, values in samples.items()},
    }


def _probe(
    topology: tuple[ProcessRecord, list[ProcessRecord]], password: str, samples: dict[str, list[float]]
) -> int:
    """Write one probe on the primary, time its arrival on each replica; return how many missed it."""
    primary, replicas = topology
    key, token = f"{PROBE_PREFIX}{uuid.uuid4().hex}", str(time.time_ns())
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(client(primary.host, primary.port, password))
        followers = {r.name: stack.enter_context(client(r.host, r.port, password)) for r in replicas}
        for name in followers:
            samples.setdefault(name, [])
        for conn in followers.values():
            with contextlib.suppress(redis.RedisError, OSError):
                conn.ping()  # connect before the clock starts
        writer.set(key, token, px=60_000)
        written = time.perf_counter()
        pending = dict(followers)
        while pending and time.perf_counter() - written < 2.0:
            for name, conn in list(pending.items()):
                try:
                    seen = conn.get(key) == token
                except (redis.RedisError, OSError):
                    seen = False
                if seen:
                    samples[name].append((time.perf_counter() - written) * 1000)
                    del pending[name]
            if pending:
                time.sleep(0.0005)
    return len(pending)


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "samples": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(ordered[-1], 3),
        "samples": len(ordered),
    }
