"""Fault primitives for drills: each breaks one real thing in a running lab, and has an undo.

Every function takes the lab's state folder and plain strings/ints (so Chaos Toolkit python
providers can call them), is idempotent, and returns a JSON-able dict of what it did with
``time`` = the epoch second the fault took effect. Losses are SIGKILL (no drain, no
goodbye), as a real site or machine loss is; undos wait until the part is ready again.
Partitions and latency need a lab started as root with ``--netns``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import redis

from skyfleet.lab import broker, frontdoor, network, replication
from skyfleet.lab.errors import LabError
from skyfleet.lab.lifecycle import frontdoor_ready, http_ready, wait_ready
from skyfleet.lab.procs import (
    ProcessRecord,
    Role,
    is_running,
    is_stopped,
    kill_records,
    signal_process,
    spawn,
)
from skyfleet.lab.state import LabState, SiteNetwork, load_state, updating

# Restart order within a site: what others depend on first.
START_ORDER = (Role.REDIS, Role.SENTINEL, Role.NATS, Role.API, Role.WORKER)


def _lab(state_dir: str) -> LabState:
    """The lab's state, refusing a lab that is not up (its configs are gone after ``down``)."""
    state = load_state(state_dir)
    if state.phase != "up":
        raise LabError(
            f"the lab in {state.state_dir} is {state.phase}, not up; start it with `skyfleet lab up`"
        )
    return state


def _check_site(state: LabState, site: str) -> None:
    if site not in state.sites:
        raise LabError(f"site {site!r} is not in the lab (sites: {', '.join(state.sites)})")


def _replica(state: LabState, site: str, index: int) -> ProcessRecord:
    _check_site(state, site)
    for rec in state.find(site=site, role=Role.API):
        if rec.index == index:
            return rec
    raise LabError(f"site {site!r} has no api replica {index} (replicas: 0-{state.lab_config.replicas - 1})")


def _kill(state_dir: str, names: list[str]) -> tuple[float, list[str]]:
    with updating(state_dir) as state:
        records = [state.get(n) for n in names]
        for rec in records:
            rec.wanted = False
        when = time.time()
        killed = kill_records(records)
    return when, killed


def _spawn_missing(
    state_dir: str, names: list[str], extra_args: dict[str, list[str]] | None = None
) -> list[str]:
    """Start those of ``names`` that are not running; return the names started."""
    started = []
    with updating(state_dir) as state:
        for name in names:
            rec = state.get(name)
            if is_running(rec):
                rec.wanted = True
                continue
            argv = rec.argv
            if extra_args and name in extra_args:
                rec.argv = [*argv, *extra_args[name]]
            try:
                spawn(rec, secrets_dir=Path(state.secrets_dir), marker=state.state_dir)
            finally:
                rec.argv = argv
            started.append(name)
    return started


def _ready_probe(state: LabState, rec: ProcessRecord) -> bool:
    if rec.role in (Role.REDIS, Role.SENTINEL):
        return replication.ping(rec.host, rec.port, replication.password_of(state))
    if rec.role == Role.NATS:
        return broker.node_ready(rec, len(state.find(role=Role.NATS)))
    return http_ready(rec)


def _wait(state_dir: str, names: list[str], what: str = "ready") -> None:
    state = load_state(state_dir)
    records = [state.get(n) for n in names]
    wait_ready(records, lambda r: _ready_probe(state, r), what=what)


def _wait_frontdoor(state_dir: str, names: list[str]) -> None:
    """Wait until the front door has marked the api replicas ``names`` UP again."""
    state = load_state(state_dir)
    door = state.find(role=Role.FRONTDOOR)
    if names and door and is_running(door[0]):
        wait_ready(door, frontdoor_ready(state, names), what=f"seeing {', '.join(names)} UP", timeout=30)


def _replica_args(state: LabState, names: list[str]) -> dict[str, list[str]]:
    """Restarted Redis nodes rejoin as replicas of whoever the Sentinels say is primary now."""
    primary = replication.primary_address(state)
    args: dict[str, list[str]] = {}
    for name in names:
        rec = state.get(name)
        if rec.role == Role.REDIS and primary and primary != (rec.host, rec.port):
            args[name] = ["--replicaof", primary[0], str(primary[1])]
    return args


def _wait_replicating(state_dir: str, names: list[str], timeout: float = 30.0) -> None:
    """Wait until each Redis node of ``names`` is the Sentinels' primary or a linked replica."""
    state = load_state(state_dir)
    password = replication.password_of(state)

    def linked(rec: ProcessRecord) -> bool:
        try:
            with replication.client(rec.host, rec.port, password) as conn:
                info = conn.info("replication")
        except (redis.RedisError, OSError):
            return False
        if info.get("role") == "master":
            return replication.primary_address(state) == (rec.host, rec.port)
        return info.get("master_link_status") == "up"

    wait_ready([state.get(n) for n in names], linked, what="replicating", timeout=timeout)


# --- Whole site --------------------------------------------------------------------------


def stop_site(state_dir: str, site: str) -> dict[str, Any]:
    """Lose a whole site: SIGKILL its api replicas, worker, Redis, Sentinel and NATS node."""
    state = _lab(state_dir)
    _check_site(state, site)
    names = [r.name for r in state.find(site=site)]
    when, killed = _kill(state_dir, names)
    return {"fault": "stop_site", "site": site, "time": when, "killed": killed}


def start_site(state_dir: str, site: str) -> dict[str, Any]:
    """Bring a lost site back: Redis rejoins as a replica, NATS rejoins the cluster, apps ready."""
    state = _lab(state_dir)
    _check_site(state, site)
    # Everything starts at once (the apps retry until Redis and NATS answer), Redis first so
    # it is told whom to follow before anything can write to it.
    names = [r.name for role in START_ORDER for r in state.find(site=site, role=role)]
    redis_names = [r.name for r in state.find(site=site, role=Role.REDIS)]
    started = _spawn_missing(state_dir, names, _replica_args(state, redis_names))
    _wait(state_dir, names)
    _wait_replicating(state_dir, [r.name for r in state.find(site=site, role=Role.REDIS)])
    _wait_frontdoor(state_dir, [r.name for r in state.find(site=site, role=Role.API)])
    return {"fault": "start_site", "site": site, "time": time.time(), "started": started}


# --- One api replica ---------------------------------------------------------------------


def kill_replica(state_dir: str, site: str, index: int = 0) -> dict[str, Any]:
    """Lose one api replica (SIGKILL): in-flight requests on it fail over at the front door."""
    rec = _replica(_lab(state_dir), site, index)
    when, killed = _kill(state_dir, [rec.name])
    return {"fault": "kill_replica", "site": site, "time": when, "killed": killed}


def restart_replica(state_dir: str, site: str, index: int = 0) -> dict[str, Any]:
    """Start a killed api replica again and wait until the front door has it back."""
    rec = _replica(_lab(state_dir), site, index)
    started = _spawn_missing(state_dir, [rec.name])
    _wait(state_dir, [rec.name])
    _wait_frontdoor(state_dir, [rec.name])
    return {"fault": "restart_replica", "site": site, "time": time.time(), "started": started}


def pause_replica(state_dir: str, site: str, index: int = 0) -> dict[str, Any]:
    """Hang one api replica (SIGSTOP): it accepts connections but never answers."""
    rec = _replica(_lab(state_dir), site, index)
    when = time.time()
    paused = [] if is_stopped(rec) else [rec.name] if signal_process(rec, signal.SIGSTOP) else []
    return {"fault": "pause_replica", "site": site, "time": when, "paused": paused}


def resume_replica(state_dir: str, site: str, index: int = 0) -> dict[str, Any]:
    """Let a paused api replica run again (SIGCONT)."""
    rec = _replica(_lab(state_dir), site, index)
    resumed = [rec.name] if is_stopped(rec) and signal_process(rec, signal.SIGCONT) else []
    return {"fault": "resume_replica", "site": site, "time": time.time(), "resumed": resumed}


# --- Cache -------------------------------------------------------------------------------


def kill_redis_primary(state_dir: str) -> dict[str, Any]:
    """Lose the Redis primary (SIGKILL), wherever it is now; Sentinel promotes a replica.

    Idempotent while the failover runs: if the primary the Sentinels name is already dead,
    nothing more is killed.
    """
    state = _lab(state_dir)
    addr = replication.primary_address(state)
    if addr is None:
        raise LabError(f"no Sentinel of the lab at {state_dir} knows a Redis primary")
    rec = next((r for r in state.find(role=Role.REDIS) if (r.host, r.port) == addr), None)
    if rec is None:
        raise LabError(f"the Sentinels name {addr[0]}:{addr[1]} as primary, which is not a lab Redis")
    when, killed = _kill(state_dir, [rec.name])
    return {
        "fault": "kill_redis_primary",
        "site": rec.site,
        "time": when,
        "killed": killed,
        "primary": rec.name,
    }


def restore_redis(state_dir: str) -> dict[str, Any]:
    """Restart every stopped Redis node as a replica of the current primary; wait for the sync."""
    state = _lab(state_dir)
    names = [r.name for r in state.find(role=Role.REDIS) if not is_running(r)]
    started = _spawn_missing(state_dir, names, _replica_args(state, names))
    _wait(state_dir, names)
    _wait_replicating(state_dir, names)
    return {"fault": "restore_redis", "site": None, "time": time.time(), "started": started}


# --- Broker ------------------------------------------------------------------------------


def stop_broker(state_dir: str, site: str) -> dict[str, Any]:
    """Lose a site's NATS node (SIGKILL); the apps there reconnect to another node."""
    state = _lab(state_dir)
    _check_site(state, site)
    names = [r.name for r in state.find(site=site, role=Role.NATS)]
    when, killed = _kill(state_dir, names)
    return {"fault": "stop_broker", "site": site, "time": when, "killed": killed}


def start_broker(state_dir: str, site: str) -> dict[str, Any]:
    """Restart a site's NATS node and wait until it is back in the JetStream cluster."""
    state = _lab(state_dir)
    _check_site(state, site)
    names = [r.name for r in state.find(site=site, role=Role.NATS)]
    started = _spawn_missing(state_dir, names)
    _wait(state_dir, names)
    return {"fault": "start_broker", "site": site, "time": time.time(), "started": started}


# --- Network (root + --netns) ------------------------------------------------------------


def _site_network(state: LabState, site: str) -> SiteNetwork:
    _check_site(state, site)
    if state.network is None:
        raise LabError(
            "network faults need a lab started as root with --netns "
            f"(the lab at {state.state_dir} runs on loopback)"
        )
    return state.network.sites[site]


def partition_site(state_dir: str, site: str) -> dict[str, Any]:
    """Cut a site off: its link goes down, so nobody reaches it while its processes run on."""
    link = _site_network(_lab(state_dir), site)
    when = time.time()
    changed = network.link_is_up(link)
    if changed:
        network.set_link(link, up=False)
    return {"fault": "partition_site", "site": site, "time": when, "changed": changed}


def heal_partition(state_dir: str, site: str) -> dict[str, Any]:
    """Reconnect a partitioned site, keeping it out of the front door until it has reconciled.

    While cut off, the site's Redis may still think it is the primary, and its apps would
    pass /readyz against it and serve stale sessions. So its replicas stay in maintenance at
    the front door until Sentinel has demoted that Redis to a replica of the current primary;
    then they are put back and this waits until they are UP.
    """
    state = _lab(state_dir)
    link = _site_network(state, site)
    apis = [r.name for r in state.find(site=site, role=Role.API) if r.wanted]
    changed = not network.link_is_up(link)
    when = time.time()
    if changed:
        frontdoor.set_maintenance(state, apis, on=True)
        network.set_link(link, up=True)
        try:
            _wait_replicating(state_dir, [r.name for r in state.find(site=site, role=Role.REDIS) if r.wanted])
        finally:
            frontdoor.set_maintenance(state, apis, on=False)
    _wait_frontdoor(state_dir, apis)
    return {"fault": "heal_partition", "site": site, "time": when, "changed": changed}


def add_latency(
    state_dir: str, site: str, delay_ms: int = 100, jitter_ms: int = 0, loss_percent: float = 0
) -> dict[str, Any]:
    """Delay (and optionally drop) every packet to and from a site with tc netem."""
    link = _site_network(_lab(state_dir), site)
    when = time.time()
    spec = network.set_netem(link, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_percent=loss_percent)
    return {"fault": "add_latency", "site": site, "time": when, "netem": spec}


def clear_latency(state_dir: str, site: str) -> dict[str, Any]:
    """Remove the site's netem delay/loss."""
    link = _site_network(_lab(state_dir), site)
    network.clear_netem(link)
    return {"fault": "clear_latency", "site": site, "time": time.time()}
