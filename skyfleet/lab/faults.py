"""Fault primitives for drills: each breaks one real thing in a running lab, and has an undo.

Every function takes the lab's state folder and plain strings/ints (so Chaos Toolkit python
providers can call them), is idempotent, and returns a JSON-able dict of what it did with
``time`` = the epoch second the fault took effect. Losses are SIGKILL (no drain, no
goodbye), as a real site or machine loss is; undos wait until the part is ready again.
Partitions, packet loss and latency need a lab started as root with ``--netns``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from skyfleet.lab import broker, frontdoor, network, replication
from skyfleet.lab.errors import LabError
from skyfleet.lab.lifecycle import frontdoor_ready, http_ready, log_tail, wait_ready
from skyfleet.lab.procs import (
    ProcessRecord,
    Role,
    is_running,
    is_stopped,
    kill_records,
    signal_process,
    spawn,
    stop_records,
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
    if not network.is_root():
        raise LabError("network faults need root (they change the lab's namespaces and links); run as root")
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


def _out_of_rotation(state: LabState, apis: list[str]) -> bool:
    """Whether any of the api replicas ``apis`` is not UP at the front door now."""
    door = state.find(role=Role.FRONTDOOR)
    if not apis or not door or not is_running(door[0]):
        return False
    status = {s["server"]: str(s["status"]) for s in frontdoor.server_states(state.state_dir)}
    return any(not status.get(name, "").startswith("UP") for name in apis)


def network_faults(state_dir: str, site: str) -> list[str]:
    """The network faults in effect on a site now: partition, packet_loss, netem, delay_line,
    latency_loss (a probe, and what the undos look at before waiting for the site)."""
    state = _lab(state_dir)
    link = _site_network(state, site)
    found = []
    if not network.link_is_up(link):
        found.append("partition")
    if network.packet_loss(link) is not None:
        found.append("packet_loss")
    if "netem" in network.tc("qdisc", "show", "dev", link.veth_host, check=False).stdout:
        found.append("netem")
    # A delay line that died (SIGKILL) leaves the link off the lab bridge: still this fault.
    assert state.network is not None
    if site in state.delay_lines or network.link_master(link.veth_host) != state.network.bridge:
        found.append("delay_line")
    if network.packet_loss(link, table=network.LATENCY_LOSS_TABLE) is not None:
        found.append("latency_loss")
    return found


def _lift(state_dir: str, site: str, kinds: set[str], lift: Callable[[], bool]) -> bool:
    """Undo the network fault(s) ``kinds`` on ``site``; ``lift`` returns whether it changed anything.

    A degraded link (heavy loss, a long delay) can cut a site off as a partition does: the
    front door marks it down, Sentinel may promote a replica elsewhere, and the site's Redis
    may then be a stale primary. So, as ``heal_partition`` does, a site whose replicas are out
    of rotation stays in maintenance at the front door until its Redis follows the current
    primary; a site that was still served is not taken out of rotation at all. Either way
    this returns once the site's Redis replicates and its replicas are UP, unless another
    network fault still holds the site (then it returns at once: that fault's undo waits).
    """
    state = _lab(state_dir)
    if set(network_faults(state_dir, site)) - kinds:
        return lift()
    apis = [r.name for r in state.find(site=site, role=Role.API) if r.wanted]
    hold = _out_of_rotation(state, apis)
    if hold:
        frontdoor.set_maintenance(state, apis, on=True)
    try:
        changed = lift()
        if changed:
            _wait_replicating(state_dir, [r.name for r in state.find(site=site, role=Role.REDIS) if r.wanted])
    finally:
        if hold:
            frontdoor.set_maintenance(state, apis, on=False)
    _wait_frontdoor(state_dir, apis)
    return changed


def add_packet_loss(state_dir: str, site: str, loss_percent: float = 10) -> dict[str, Any]:
    """Drop ``loss_percent`` % of the packets to and from a site (each direction), with nftables.

    Works without netem: one nftables table in the site's namespace drops packets at random
    on the site's veth (input and output). Applying it again replaces the percentage.
    """
    percent, _ = network.loss_threshold(loss_percent)
    link = _site_network(_lab(state_dir), site)
    when = time.time()
    rule = network.set_packet_loss(link, percent)
    return {"fault": "add_packet_loss", "site": site, "time": when, **rule}


def clear_packet_loss(state_dir: str, site: str) -> dict[str, Any]:
    """Delete the site's packet-loss table (only that one); idempotent.

    Returns how many packets it dropped per direction, and waits until the site is back in
    rotation (see ``_lift``).
    """
    link = _site_network(_lab(state_dir), site)
    seen = network.packet_loss(link)
    when = time.time()
    changed = _lift(state_dir, site, {"packet_loss"}, lambda: network.clear_packet_loss(link))
    dropped = seen.get("dropped") if seen else None
    return {"fault": "clear_packet_loss", "site": site, "time": when, "changed": changed, "dropped": dropped}


def _whole_ms(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise LabError(f"{field}: given {value!r}; expected a whole number of milliseconds >= 0")
    return int(value)


def add_latency(
    state_dir: str, site: str, delay_ms: int = 100, jitter_ms: int = 0, loss_percent: float = 0
) -> dict[str, Any]:
    """Delay (and optionally drop) every packet to and from a site.

    With netem, ``tc netem`` on both ends of the site's link. Without it (this lab's VM
    kernel), the delay comes from a userspace delay line on the link
    (``skyfleet.lab.delayline``) and the loss from an nftables table in the site's namespace.
    Each direction gets ``delay_ms`` ± ``jitter_ms`` and ``loss_percent`` in either case.
    """
    delay, jitter = _whole_ms(delay_ms, "delay_ms"), _whole_ms(jitter_ms, "jitter_ms")
    loss = network.loss_threshold(loss_percent)[0] if loss_percent else 0.0
    if not (delay or jitter or loss):
        raise LabError("add_latency: delay_ms, jitter_ms and loss_percent are all 0: nothing to inject")
    state = _lab(state_dir)
    link = _site_network(state, site)
    if network.netem_available():
        when = time.time()
        spec = network.set_netem(link, delay_ms=delay, jitter_ms=jitter, loss_percent=loss)
        return {"fault": "add_latency", "site": site, "time": when, "mechanism": "netem", "netem": spec}
    if (delay or jitter) and not network.tun_available():
        raise LabError(
            f"latency: this kernel ({os.uname().release}) has no netem qdisc (sch_netem) and no "
            "TUN device (/dev/net/tun), so delay cannot be injected here (latency needs netem or "
            "the lab's TAP delay line); for loss alone use site_packet_loss "
            "(faults.add_packet_loss), which needs only nftables"
        )
    when = time.time()
    if delay or jitter:
        _start_delay_line(state_dir, site, delay, jitter)
    else:
        _stop_delay_line(state_dir, site)
    if loss:
        network.set_packet_loss(link, loss, table=network.LATENCY_LOSS_TABLE)
    else:
        network.clear_packet_loss(link, table=network.LATENCY_LOSS_TABLE)
    mechanism = " + ".join(m for m, on in (("delay line", delay or jitter), ("nftables", loss)) if on)
    return {
        "fault": "add_latency",
        "site": site,
        "time": when,
        "mechanism": mechanism,
        "delay_ms": delay,
        "jitter_ms": jitter,
        "loss_percent": loss,
    }


def clear_latency(state_dir: str, site: str) -> dict[str, Any]:
    """Remove the site's delay and loss (netem, or the delay line and its nftables table)."""
    link = _site_network(_lab(state_dir), site)
    when = time.time()

    def lift() -> bool:
        network.clear_netem(link)
        stopped = _stop_delay_line(state_dir, site)
        return network.clear_packet_loss(link, table=network.LATENCY_LOSS_TABLE) or stopped

    changed = _lift(state_dir, site, {"netem", "delay_line", "latency_loss"}, lift)
    return {"fault": "clear_latency", "site": site, "time": when, "changed": changed}


def _delay_argv(state: LabState, site: str, delay_ms: int, jitter_ms: int) -> list[str]:
    assert state.network is not None
    link = state.network.sites[site]
    tap, sink = network.delay_devices(link)
    return [
        sys.executable,
        "-m",
        "skyfleet.lab.delayline",
        "--link",
        link.veth_host,
        "--bridge",
        state.network.bridge,
        "--tap",
        tap,
        "--sink",
        sink,
        "--delay-ms",
        str(delay_ms),
        "--jitter-ms",
        str(jitter_ms),
    ]


def _start_delay_line(state_dir: str, site: str, delay_ms: int, jitter_ms: int) -> bool:
    """Run a delay line on the site's link (replacing one with other figures); False if unchanged."""
    with updating(state_dir) as state:
        assert state.network is not None
        argv = _delay_argv(state, site, delay_ms, jitter_ms)
        old = state.delay_lines.get(site)
        if old is not None and is_running(old) and old.argv == argv:
            return False
    _stop_delay_line(state_dir, site)
    with updating(state_dir) as state:
        assert state.network is not None
        link = state.network.sites[site]
        network.repair_link(state.network, link)  # whatever a crashed earlier line left
        network.pin_bridge_address(state.network.bridge)
        rec = ProcessRecord(
            name=f"{site}-delay",
            role=Role.DELAY,
            site=site,
            argv=argv,
            cwd=state.state_dir,
            log_file=str(Path(state.state_dir) / "logs" / f"{site}-delay.log"),
            host=link.address,
        )
        spawn(rec, secrets_dir=Path(state.secrets_dir), marker=state.state_dir)
        state.delay_lines[site] = rec
        bridge, (_, sink) = state.network.bridge, network.delay_devices(link)
    deadline = time.monotonic() + 10
    while network.link_master(link.veth_host) != sink or not _ready_line(rec):
        if not is_running(rec) or time.monotonic() > deadline:
            tail = log_tail(rec)
            _stop_delay_line(state_dir, site)
            raise LabError(f"latency: the delay line on {site}'s link ({bridge}) did not start\n{tail}")
        time.sleep(0.02)
    return True


def _ready_line(rec: ProcessRecord) -> bool:
    """The delay line prints ``ready`` once it forwards (its log is appended to across runs)."""
    try:
        lines = Path(rec.log_file).read_text(errors="replace").splitlines()
    except OSError:
        return False
    return bool(lines) and lines[-1].strip() == "ready"


def _stop_delay_line(state_dir: str, site: str) -> bool:
    """Stop the site's delay line, if any, and make sure its link is back on the bridge.

    Returns whether there was one (running or not)."""
    with updating(state_dir) as state:
        rec = state.delay_lines.pop(site, None)
        if rec is not None:
            stop_records([rec], grace=5.0)
        if state.network is not None:
            network.repair_link(state.network, state.network.sites[site])
    return rec is not None  # a line that died on its own still left the link to repair
