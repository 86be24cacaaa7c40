"""Fault primitives on the twin: lose a site, a replica, a cache's primary, a broker; cut or
degrade a site's uplink. Each takes the lab's state folder and plain values (so Chaos Toolkit
python providers can call it), is idempotent, and returns a JSON-able record with the time it
took effect. Losses are SIGKILL (no drain, as a real loss); every undo waits, with a bound,
until the part it restores is ready again.

What a site loss is here: every pod and the load balancer of the site are killed and its
uplink is cut. A provider's regional services (SQS, ElastiCache, Memorystore, Pub/Sub) keep
their data through a region's outage, so their lab processes keep running behind the cut; an
on-prem site's own stores lose their pods but keep their volumes, as a data centre's outage
leaves its disks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyfleet.lab import caches, fabric, lb, names, network, procs, twin
from skyfleet.lab.errors import LabError
from skyfleet.lab.procs import ProcessRecord, Role, is_running, stop_records
from skyfleet.lab.state import LabState, load_state, updating

WAIT_SECONDS = 120.0


def _lab(state_dir: str) -> LabState:
    state = load_state(state_dir)
    if state.phase != "up":
        raise LabError(f"the lab in {state.state_dir} is {state.phase}, not up")
    return state


def _check_site(state: LabState, site: str) -> None:
    if site not in state.sites:
        raise LabError(f"site: {site!r} is not a site of this lab (sites: {', '.join(state.sites)})")


def _pod_records(state: LabState, pod: str) -> list[ProcessRecord]:
    return [r for r in state.processes if r.pod == pod and not r.init]


def _kill(state_dir: str, records: list[ProcessRecord]) -> tuple[float, list[str]]:
    """SIGKILL ``records`` and mark them stopped on purpose; return when, and who ran."""
    names_ = {r.name for r in records}
    with updating(state_dir) as state:
        mine = [r for r in state.processes if r.name in names_]
        when = time.time()
        killed = procs.kill_records(mine)
        for rec in mine:
            rec.wanted = False
    return when, killed


def _start(state_dir: str, records: list[ProcessRecord]) -> list[str]:
    """(Re)start the records that are not running: init containers first, as a platform does."""
    names_ = {r.name for r in records}
    started = []
    with updating(state_dir) as state:
        for rec in state.processes:
            if rec.name not in names_ or (is_running(rec) and not rec.init):
                continue
            if rec.init:
                code = twin._run_to_completion(state, rec, 60)
                if code != 0:
                    raise LabError(f"{rec.name}: the init container exited with code {code}")
                continue
            procs.spawn(rec, secrets_dir=Path(state.state_dir) / "secrets", marker=state.state_dir)
            rec.wanted = True
            started.append(rec.name)
    return started


def _wait_ready(state_dir: str, records: list[ProcessRecord], timeout: float = WAIT_SECONDS) -> None:
    state = load_state(state_dir)
    live = [state.get(r.name) for r in records if not r.init]
    twin.wait_for("ready again", live, twin.container_ready, timeout=timeout)


def backends(state: LabState, site: str) -> dict[str, str]:
    """The site's load balancer: each backend pod's state there (UP, DOWN, MAINT...)."""
    s = state.sites[site]
    if not s.admin_socket:
        return {}
    rows = lb.server_states(Path(s.admin_socket))
    return {s.backends.get(r["server"], r["server"]): r["status"] for r in rows}


def _wait_backends(state_dir: str, site: str, pods: list[str], timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(LabError, OSError):
            status = backends(load_state(state_dir), site)
            if all(status.get(p, "").startswith("UP") for p in pods if p in status):
                return
        if time.monotonic() > deadline:
            raise LabError(f"{site}: backends {pods} not UP at the load balancer after {timeout:.0f} s")
        time.sleep(0.2)


# --- a whole site ------------------------------------------------------------------------------


def _site_losses(state: LabState, site: str) -> list[ProcessRecord]:
    """What a site's loss kills: its pods' containers and its load balancer (not a provider's
    regional services, which keep their data behind the cut)."""
    return [r for r in state.find(site=site) if r.role in (Role.CONTAINER, Role.LB) and not r.init]


def stop_site(state_dir: str, site: str, silent: bool = False) -> dict[str, Any]:
    """Lose a whole site: kill its pods and load balancer, and cut its uplink (``silent``: see
    :func:`_cut`)."""
    state = _lab(state_dir)
    _check_site(state, site)
    _cut(state, site, silent)
    when, killed = _kill(state_dir, _site_losses(state, site))
    return {"fault": "stop_site", "site": site, "time": when, "killed": killed, "silent": silent}


def start_site(state_dir: str, site: str) -> dict[str, Any]:
    """Bring a lost site back: its uplink, its pods (stateful ones first), its load balancer."""
    state = _lab(state_dir)
    _check_site(state, site)
    when = time.time()
    records = [r for r in state.find(site=site) if r.role in (Role.CONTAINER, Role.LB)]
    _mend(state, site)
    started: list[str] = []
    for wave in (0, 1):
        batch = [r for r in records if r.role == Role.CONTAINER and r.wave == wave]
        started += _start(state_dir, batch)
        _wait_ready(state_dir, batch)
    lbs = [r for r in records if r.role == Role.LB]
    started += _start(state_dir, lbs)
    _wait_backends(state_dir, site, list(state.sites[site].backends.values()))
    return {"fault": "start_site", "site": site, "time": when, "started": started}


# --- one replica ---------------------------------------------------------------------------------


def _replica(state: LabState, site: str, index: int, workload: str) -> str:
    _check_site(state, site)
    pod = f"{site}/{workload}-{index}"
    if pod not in state.fabric.pods:
        have = sorted(k.split("/", 1)[1] for k in state.fabric.pods if k.startswith(f"{site}/{workload}-"))
        raise LabError(f"index: {site} has no {workload} replica {index} (it has {have})")
    return pod


def kill_replica(state_dir: str, site: str, index: int = 0, workload: str = "api") -> dict[str, Any]:
    """Lose one replica (every container of its pod), as a task or pod lost with its host."""
    state = _lab(state_dir)
    pod = _replica(state, site, index, workload)
    when, killed = _kill(state_dir, _pod_records(state, pod))
    return {"fault": "kill_replica", "site": site, "pod": pod, "time": when, "killed": killed}


def restart_replica(state_dir: str, site: str, index: int = 0, workload: str = "api") -> dict[str, Any]:
    state = _lab(state_dir)
    pod = _replica(state, site, index, workload)
    records = [r for r in state.processes if r.pod == pod]
    when = time.time()
    started = _start(state_dir, records)
    _wait_ready(state_dir, records)
    if pod in state.sites[site].backends.values():
        _wait_backends(state_dir, site, [pod])
    return {"fault": "restart_replica", "site": site, "pod": pod, "time": when, "started": started}


def pause_replica(state_dir: str, site: str, index: int = 0, workload: str = "api") -> dict[str, Any]:
    """Hang one replica (SIGSTOP): it accepts connections and never answers."""
    state = _lab(state_dir)
    pod = _replica(state, site, index, workload)
    when = time.time()
    paused = [r.name for r in _pod_records(state, pod) if procs.signal_process(r, signal.SIGSTOP)]
    return {"fault": "pause_replica", "site": site, "pod": pod, "time": when, "paused": paused}


def resume_replica(state_dir: str, site: str, index: int = 0, workload: str = "api") -> dict[str, Any]:
    state = _lab(state_dir)
    pod = _replica(state, site, index, workload)
    when = time.time()
    resumed = [r.name for r in _pod_records(state, pod) if procs.signal_process(r, signal.SIGCONT)]
    _wait_ready(state_dir, _pod_records(state, pod))
    return {"fault": "resume_replica", "site": site, "pod": pod, "time": when, "resumed": resumed}


# --- a cache's primary ------------------------------------------------------------------------------


def cache_primary(state_dir: str, site: str) -> dict[str, Any]:
    """The site's cache primary now (a probe)."""
    state = load_state(state_dir)
    _check_site(state, site)
    roles = {r.name: caches.role(r, state) for r in caches.nodes(state, site) if is_running(r)}
    primary = [n for n, role in roles.items() if role == "master"]
    return {"site": site, "primary": primary[0] if len(primary) == 1 else None, "roles": roles}


def kill_cache_primary(state_dir: str, site: str) -> dict[str, Any]:
    """Lose the site's cache primary (its server process); the failover the plan asks for (the
    provider's, or Sentinel's on-prem) is what brings writes back."""
    state = _lab(state_dir)
    _check_site(state, site)
    found = cache_primary(state_dir, site)
    if found["primary"] is None:
        raise LabError(f"{site}: no single cache primary to lose (roles: {found['roles']})")
    rec = state.get(found["primary"])
    targets = _pod_records(state, rec.pod or "") if rec.role == Role.CONTAINER else [rec]
    when, killed = _kill(state_dir, targets)
    return {"fault": "kill_cache_primary", "site": site, "node": rec.name, "time": when, "killed": killed}


def restore_cache(state_dir: str, site: str) -> dict[str, Any]:
    """Bring lost cache nodes back, as replicas of the current primary."""
    state = _lab(state_dir)
    _check_site(state, site)
    when = time.time()
    lost = [r for r in caches.nodes(state, site) if not is_running(r)]
    if lost:
        # A node comes back as a replica of the primary the failover chose, as a provider's
        # replacement node does. Started before the failover ends (a slow machine), it would
        # find itself still named primary and come back empty, taking the site's data with it.
        _wait_failed_over(state_dir, site, lost)
    restored = []
    for rec in lost:
        if rec.role == Role.SERVICE:
            _rejoin_as_replica(state_dir, site, rec)
            restored += _start(state_dir, [rec])
        else:
            pod = [r for r in state.processes if r.pod == rec.pod]
            restored += _start(state_dir, pod)  # its init script asks the Sentinels who is primary
            _wait_ready(state_dir, pod)
    deadline = time.monotonic() + WAIT_SECONDS
    while any(caches.role(load_state(state_dir).get(r.name), state) is None for r in lost):
        if time.monotonic() > deadline:
            raise LabError(f"{site}: restored cache nodes do not answer after {WAIT_SECONDS:.0f} s")
        time.sleep(0.2)
    return {"fault": "restore_cache", "site": site, "time": when, "restored": restored}


def _wait_failed_over(state_dir: str, site: str, lost: list[ProcessRecord]) -> None:
    """Wait (bounded) until a surviving node is the site's one primary and, for a managed
    cache, its endpoint names that node."""
    gone = {r.name for r in lost}
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        state = load_state(state_dir)
        found = cache_primary(state_dir, site)
        primary = found["primary"]
        if primary is not None and primary not in gone:
            rec = state.get(primary)
            # Every Sentinel names it (a pod coming back asks them who is primary) ...
            named = caches.sentinels_agree(state, site)
            agreed = named is not None and (named == rec.host or named.split(".")[0] == _pod_hostname(rec))
            # ... and a managed cache's endpoint names it (a node coming back follows it).
            endpoint = next(iter(state.sites[site].endpoints), None)
            if rec.role == Role.SERVICE and endpoint is not None:
                agreed = agreed and names.lookup(Path(state.sites[site].hosts_file), endpoint)[:1] == [
                    rec.host
                ]
            if agreed:
                return
        if time.monotonic() > deadline:
            raise LabError(
                f"{site}: no surviving cache node became primary within {WAIT_SECONDS:.0f} s "
                f"(roles: {found['roles']}); the lost nodes were not brought back"
            )
        time.sleep(0.2)


def _pod_hostname(rec: ProcessRecord) -> str | None:
    """The first label of the name a pod announces itself by (``redis-1`` of redis-1.<headless>)."""
    return rec.pod.split("/", 1)[1] if rec.role == Role.CONTAINER and rec.pod else None


def _rejoin_as_replica(state_dir: str, site: str, rec: ProcessRecord) -> None:
    """A managed node coming back follows the primary its endpoint names now."""
    state = load_state(state_dir)
    endpoint = next(iter(state.sites[site].endpoints), None)
    if endpoint is None:
        return
    (address,) = names.lookup(Path(state.sites[site].hosts_file), endpoint)[:1] or [None]
    conf = Path(next(a for a in rec.argv if a.endswith(".conf")))
    lines = [
        ln
        for ln in conf.read_text(encoding="utf-8").splitlines()
        if not ln.startswith(("replicaof ", "slaveof "))
    ]
    port = rec.ports.get("cache", 0)
    if address and address != rec.host:
        lines.append(f"replicaof {address} {port}")
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- a broker ------------------------------------------------------------------------------------


def _broker(state: LabState, site: str) -> tuple[list[ProcessRecord], bool]:
    """The site's queue service, and whether its loss is a freeze (a provider's regional
    service that keeps its messages through an outage, which the lab holds in memory) rather
    than a kill (a NATS node, the Pub/Sub server, which keep theirs on disk)."""
    _check_site(state, site)
    pods = [r for r in state.find(site=site, role=Role.CONTAINER) if r.container == "nats"]
    if pods:
        return [r for r in state.processes if r.pod == pods[0].pod and not r.init], False
    pubsub = [r for r in state.find(site=site, role=Role.SERVICE) if r.container == "pubsub"]
    if pubsub:
        return pubsub, False
    sqs = [r for r in state.find(site=site, role=Role.SERVICE) if r.container == "sqs"]
    if sqs:
        return sqs, True
    raise LabError(f"{site}: the lab runs no queue service there")


def stop_broker(state_dir: str, site: str) -> dict[str, Any]:
    """Lose the site's queue service: one NATS node, the Pub/Sub server (SIGKILL; they keep their
    messages on disk), or SQS (frozen with SIGSTOP: unreachable, its messages kept)."""
    state = _lab(state_dir)
    records, freeze = _broker(state, site)
    if freeze:
        when = time.time()
        frozen = [r.name for r in records if procs.signal_process(r, signal.SIGSTOP)]
        return {"fault": "stop_broker", "site": site, "time": when, "frozen": frozen}
    when, killed = _kill(state_dir, records)
    return {"fault": "stop_broker", "site": site, "time": when, "killed": killed}


def start_broker(state_dir: str, site: str) -> dict[str, Any]:
    state = _lab(state_dir)
    records, freeze = _broker(state, site)
    when = time.time()
    if freeze:
        thawed = [r.name for r in records if procs.signal_process(r, signal.SIGCONT)]
        return {"fault": "start_broker", "site": site, "time": when, "thawed": thawed}
    started = _start(state_dir, records)
    if records[0].role == Role.CONTAINER:
        _wait_ready(state_dir, records)
    else:
        fresh = load_state(state_dir).get(records[0].name)
        twin.wait_for("listening", [fresh], lambda r: twin._tcp_open(r.host, r.port))
    return {"fault": "start_broker", "site": site, "time": when, "started": started}


# --- the network -----------------------------------------------------------------------------------


def _cut(state: LabState, site: str, silent: bool) -> None:
    """Cut the site's uplink: its link down (nothing answers until the lab's network gives up
    on the site's addresses, about 8 s after the cut; from then on an attempt gets
    "unreachable" within about 3 s), or, ``silent``, every IP packet across it dropped, ARP
    still answered (nothing answers, ever, as from a site lost on the internet)."""
    if silent:
        network.cut_silently(state.fabric.sites[site])
    else:
        fabric.set_uplink(state.fabric, site, up=False)


def _mend(state: LabState, site: str) -> None:
    """Undo either cut (each step is idempotent)."""
    network.uncut_silently(state.fabric.sites[site])
    fabric.set_uplink(state.fabric, site, up=True)


def partition_site(state_dir: str, site: str, silent: bool = False) -> dict[str, Any]:
    """Cut the site's uplink: everything inside keeps running, nothing outside reaches it."""
    state = _lab(state_dir)
    _check_site(state, site)
    when = time.time()
    _cut(state, site, silent)
    return {"fault": "partition_site", "site": site, "time": when, "silent": silent}


def heal_partition(state_dir: str, site: str) -> dict[str, Any]:
    state = _lab(state_dir)
    _check_site(state, site)
    when = time.time()
    _mend(state, site)
    return {"fault": "heal_partition", "site": site, "time": when}


def network_faults(state_dir: str, site: str) -> list[str]:
    """The network faults in effect on a site now (a probe)."""
    state = load_state(state_dir)
    _check_site(state, site)
    link = state.fabric.sites[site]
    found = []
    out = network.ip("-o", "link", "show", link.uplink_host, check=False).stdout
    flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
    if "UP" not in flags or network.cut_silently_in_effect(link):
        found.append("partition")
    if network.packet_loss(link) is not None:
        found.append("packet_loss")
    if "netem" in network.tc("qdisc", "show", "dev", link.uplink_host, check=False).stdout:
        found.append("netem")
    if site in state.delay_lines or network.link_master(link.uplink_host) != state.fabric.wan_bridge:
        found.append("delay_line")
    if network.packet_loss(link, table=network.LATENCY_LOSS_TABLE) is not None:
        found.append("latency_loss")
    return found


def add_packet_loss(state_dir: str, site: str, loss_percent: float = 10) -> dict[str, Any]:
    """Drop ``loss_percent`` % of the frames crossing the site's uplink, each direction."""
    percent, _ = network.loss_threshold(loss_percent)
    state = _lab(state_dir)
    _check_site(state, site)
    when = time.time()
    rule = network.set_packet_loss(state.fabric.sites[site], percent)
    return {"fault": "add_packet_loss", "site": site, "time": when, **rule}


def clear_packet_loss(state_dir: str, site: str) -> dict[str, Any]:
    state = load_state(state_dir)
    _check_site(state, site)
    link = state.fabric.sites[site]
    seen = network.packet_loss(link)
    when = time.time()
    changed = network.clear_packet_loss(link)
    return {
        "fault": "clear_packet_loss",
        "site": site,
        "time": when,
        "changed": changed,
        "dropped": seen.get("dropped") if seen else None,
    }


def _whole_ms(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise LabError(f"{field}: given {value!r}; expected a whole number of milliseconds >= 0")
    return int(value)


def add_latency(
    state_dir: str, site: str, delay_ms: int = 100, jitter_ms: int = 0, loss_percent: float = 0
) -> dict[str, Any]:
    """Delay (and optionally drop) every frame crossing the site's uplink, each direction.

    With netem, ``tc netem`` on both ends of the uplink; without it (this lab's VM kernel), a
    userspace delay line on the uplink and an nftables table for the loss.
    """
    delay, jitter = _whole_ms(delay_ms, "delay_ms"), _whole_ms(jitter_ms, "jitter_ms")
    loss = network.loss_threshold(loss_percent)[0] if loss_percent else 0.0
    if not (delay or jitter or loss):
        raise LabError("add_latency: delay_ms, jitter_ms and loss_percent are all 0: nothing to inject")
    state = _lab(state_dir)
    _check_site(state, site)
    link = state.fabric.sites[site]
    if network.netem_available():
        when = time.time()
        spec = network.set_netem(link, delay_ms=delay, jitter_ms=jitter, loss_percent=loss)
        return {"fault": "add_latency", "site": site, "time": when, "mechanism": "netem", "netem": spec}
    if (delay or jitter) and not network.tun_available():
        raise LabError(
            f"latency: this kernel ({os.uname().release}) has no netem qdisc and no TUN device "
            "(/dev/net/tun): delay cannot be injected here; for loss alone use add_packet_loss"
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
    state = load_state(state_dir)
    _check_site(state, site)
    link = state.fabric.sites[site]
    when = time.time()
    network.clear_netem(link)
    stopped = _stop_delay_line(state_dir, site)
    changed = network.clear_packet_loss(link, table=network.LATENCY_LOSS_TABLE) or stopped
    return {"fault": "clear_latency", "site": site, "time": when, "changed": changed}


def _start_delay_line(state_dir: str, site: str, delay_ms: int, jitter_ms: int) -> bool:
    """Run a delay line on the site's uplink (replacing one with other figures)."""
    state = load_state(state_dir)
    link = state.fabric.sites[site]
    tap, sink = network.delay_devices(link)
    argv = [
        sys.executable, "-m", "skyfleet.lab.delayline",
        "--link", link.uplink_host, "--bridge", state.fabric.wan_bridge,
        "--tap", tap, "--sink", sink,
        "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms),
    ]  # fmt: skip
    old = state.delay_lines.get(site)
    if old is not None and is_running(old) and old.argv == argv:
        return False
    _stop_delay_line(state_dir, site)
    with updating(state_dir) as state:
        network.repair_link(state.fabric.wan_bridge, link)  # whatever a crashed earlier line left
        network.pin_bridge_address(state.fabric.wan_bridge)
        rec = ProcessRecord(
            name=f"{site}/delay",
            role=Role.DELAY,
            site=site,
            argv=argv,
            cwd=state.state_dir,
            log_file=str(Path(state.state_dir) / "logs" / f"{site}.delay.log"),
            host=state.fabric.wan_address,
        )
        procs.spawn(rec, secrets_dir=Path(state.state_dir) / "secrets", marker=state.state_dir)
        state.delay_lines[site] = rec
    deadline = time.monotonic() + 10
    while network.link_master(link.uplink_host) != sink or not _ready_line(rec):
        if not is_running(rec) or time.monotonic() > deadline:
            _stop_delay_line(state_dir, site)
            raise LabError(f"latency: the delay line on {site}'s uplink did not start")
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
    """Stop the site's delay line, if any, and put its uplink back on the WAN."""
    with updating(state_dir) as state:
        rec = state.delay_lines.pop(site, None)
        if rec is not None:
            stop_records([rec], grace=5.0)
        network.repair_link(state.fabric.wan_bridge, state.fabric.sites[site])
    return rec is not None


# Each fault with the undo that reverses it (drills declare their rollbacks from this).
UNDO: dict[str, Callable[..., dict[str, Any]]] = {
    "stop_site": start_site,
    "kill_replica": restart_replica,
    "pause_replica": resume_replica,
    "kill_cache_primary": restore_cache,
    "stop_broker": start_broker,
    "partition_site": heal_partition,
    "add_packet_loss": clear_packet_loss,
    "add_latency": clear_latency,
}
