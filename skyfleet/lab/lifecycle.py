"""``up`` and ``down``: start a whole lab in dependency order, and stop it without leftovers.

``up`` records every process in the state file the moment it starts, and tears down whatever
it started if any step fails, so no failure (or kill -9 of skyfleet itself) leaves processes
that ``down`` cannot find. ``down`` stops recorded processes (pid + start time checked),
then kills anything still carrying the lab's marker, deletes namespaces, and checks ports.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from agent_app.contract import READINESS_PATH
from skyfleet.lab import broker, credentials, network, probe, replication, topology
from skyfleet.lab.config import LabConfig, lab_id_for
from skyfleet.lab.errors import LabError
from skyfleet.lab.frontdoor import server_states
from skyfleet.lab.procs import (
    ProcessRecord,
    Role,
    is_running,
    kill_marked,
    marked_pids,
    spawn,
    stop_records,
)
from skyfleet.lab.state import FrontDoor, LabState, load_state, save_state, state_file, state_lock

READY_TIMEOUT = 60.0
POLL = 0.05


def marker(state: LabState) -> str:
    return state.state_dir


def log_tail(rec: ProcessRecord, lines: int = 15) -> str:
    try:
        text = Path(rec.log_file).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def start(state: LabState, records: list[ProcessRecord]) -> None:
    """Spawn ``records`` and record each pid in the state file straight away."""
    for rec in records:
        with state_lock(state.state_dir):
            spawn(rec, secrets_dir=Path(state.secrets_dir), marker=marker(state))
            state.upsert(rec)
            save_state(state)


def wait_ready(
    records: list[ProcessRecord],
    probe: Callable[[ProcessRecord], bool],
    *,
    what: str,
    timeout: float = READY_TIMEOUT,
    on_ready: Callable[[ProcessRecord], None] | None = None,
) -> None:
    """Poll ``probe`` on every record until all pass; fail fast if one exits, with its log."""
    pending = list(records)
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(records)))) as pool:
        while pending:
            for rec in pending:
                if not is_running(rec):
                    raise LabError(f"{rec.name} exited while starting ({what}); its log:\n{log_tail(rec)}")
            results = list(pool.map(probe, pending))
            for rec, ok in zip(pending, results, strict=True):
                if ok and on_ready:
                    on_ready(rec)
            pending = [rec for rec, ok in zip(pending, results, strict=True) if not ok]
            if pending and time.monotonic() > deadline:
                names = ", ".join(r.name for r in pending)
                first = pending[0]
                raise LabError(
                    f"not {what} after {timeout:.0f} s: {names}; log of {first.name}:\n{log_tail(first)}"
                )
            if pending:
                time.sleep(POLL)


def http_ready(rec: ProcessRecord) -> bool:
    """An api replica or worker answers /readyz with 200 (its Redis and queue are reachable)."""
    answer = probe.get(rec.host, rec.ports["http"], READINESS_PATH)
    return answer is not None and answer[0] == 200


def sentinels_converged(state: LabState) -> Callable[[ProcessRecord], bool]:
    """A Sentinel is ready when it sees every replica and every other Sentinel (so it can vote)."""
    password = replication.password_of(state)
    replicas = len(state.find(role=Role.REDIS)) - 1
    others = len(state.find(role=Role.SENTINEL)) - 1

    def probe(rec: ProcessRecord) -> bool:
        try:
            with replication.client(rec.host, rec.port, password) as conn:
                raw = conn.execute_command("SENTINEL", "MASTER", state.redis_master_name)
        except Exception:  # any error just means "not yet"
            return False
        # redis-py parses SENTINEL MASTER into a dict; older versions return a flat list.
        if isinstance(raw, dict):
            info: dict[str, Any] = raw
        elif isinstance(raw, list):
            info = dict(zip(raw[::2], raw[1::2], strict=False))
        else:
            return False
        return (
            int(info.get("num-slaves", 0)) >= replicas and int(info.get("num-other-sentinels", 0)) >= others
        )

    return probe


def frontdoor_ready(state: LabState, names: list[str] | None = None) -> Callable[[ProcessRecord], bool]:
    """The front door sees ``names`` (default: every api replica) UP."""
    wanted = set(names) if names is not None else {r.name for r in state.find(role=Role.API)}

    def probe(_: ProcessRecord) -> bool:
        try:
            servers = {s["server"]: s["status"] for s in server_states(state.state_dir)}
        except LabError:
            return False
        return all(servers.get(name) == "UP" for name in wanted)

    return probe


@contextlib.contextmanager
def _progress(console: Console | None) -> Iterator[Callable[[str], None]]:
    """A rich progress display of start-up steps; yields ``step(description)``."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
        disable=console is None,
    )
    steps = 7
    task = progress.add_task("preparing", total=steps)

    def step(description: str) -> None:
        progress.update(task, advance=1, description=description)

    with progress:
        yield step
        progress.update(task, completed=steps, description="lab is up")


def _refuse_running(root: Path) -> None:
    """Refuse a folder that holds a running lab, or that holds anything but a lab."""
    if root.exists() and not root.is_dir():
        raise LabError(f"state_dir: {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not state_file(root).exists():
        raise LabError(
            f"state_dir: {root} is not empty and holds no lab; choose a new or empty folder "
            "(the lab deletes and recreates its sub-folders there)"
        )
    if state_file(root).exists():
        try:
            old = load_state(root)
        except LabError:
            old = None
        if old and old.phase != "down" and any(is_running(r) for r in old.processes):
            raise LabError(
                f"a lab is already running in {root}; run `skyfleet lab down --state-dir {root}` first"
            )
    if marked_pids(str(root)):
        raise LabError(
            f"processes of an earlier lab in {root} are still running; run `skyfleet lab down` first"
        )


def up(config: LabConfig, *, console: Console | None = None) -> LabState:
    """Start the lab described by ``config`` and return its state once every part is ready."""
    root = config.state_path
    _refuse_running(root)
    layout = topology.Layout(root)
    if config.netns and not network.is_root():
        raise LabError("netns: --netns needs root (network namespaces and tc); run as root or drop --netns")
    ports, http_port, https_port = topology.allocate_ports(config)
    all_ports = sorted(
        [p for member in ports.values() for p in member.values()]
        + [http_port]
        + ([https_port] if https_port else [])
    )
    busy = topology.busy_ports(
        all_ports if not config.netns else [http_port, *([https_port] if https_port else [])]
    )
    if busy:
        raise LabError(
            f"base_port: ports {busy} (of {all_ports[0]}-{all_ports[-1]}) are already in use; "
            "pick another --base-port"
        )
    # A fresh runtime folder; old logs go so that health events never mix two labs.
    for sub in (layout.data, layout.logs, layout.secrets, layout.haproxy_cfg.parent):
        shutil.rmtree(sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    credentials.generate(layout.secrets, hosts=[topology.LOOPBACK, "localhost"])
    password = (layout.secrets / credentials.REDIS_PASSWORD_FILE).read_text().strip()
    net = network.plan(config) if config.netns else None
    plan = topology.build(config, layout, net, password)
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        credentials.write_secret(path, text)  # configs hold the Redis password: 0600
    layout.logs.mkdir(parents=True, exist_ok=True)
    state = LabState(
        lab_id=config.lab_id,
        state_dir=str(root),
        config=config.model_dump(mode="json", by_alias=True),
        front_door=FrontDoor(
            https_url=f"https://{topology.LOOPBACK}:{plan.https_port}" if plan.https_port else None,
            http_url=f"http://{topology.LOOPBACK}:{plan.http_port}",
            ca_file=str(layout.secrets / credentials.CA_CERT_FILE) if plan.https_port else None,
            admin_socket=str(layout.admin_socket),
            log_file=str(layout.frontdoor_log),
        ),
        api_key_file=str(layout.secrets / credentials.API_KEY_FILE),
        secrets_dir=str(layout.secrets),
        redis_master_name=topology.MASTER_NAME,
        ports=plan.ports,
        network=net,
        processes=plan.records,
    )
    save_state(state)
    try:
        with _progress(console) as step:
            _start_all(state, config, step)
    except BaseException:
        state.phase = "failed"
        save_state(state)
        teardown(state)
        raise
    state.phase = "up"
    save_state(state)
    return state


def _start_all(state: LabState, config: LabConfig, step: Callable[[str], None]) -> None:
    password = replication.password_of(state)

    def redis_up(rec: ProcessRecord) -> bool:
        return replication.ping(rec.host, rec.port, password)

    if state.network:
        step("creating network namespaces")
        network.create(state.network)
    redis_nodes = state.find(role=Role.REDIS)
    step(f"starting {len(redis_nodes)} Redis nodes (primary: {config.primary})")
    start(state, redis_nodes)
    wait_ready(redis_nodes, redis_up, what="answering PING")
    sentinels = state.find(role=Role.SENTINEL)
    nats_nodes = state.find(role=Role.NATS)
    step(f"starting {len(sentinels)} Sentinels and {len(nats_nodes)} NATS nodes")
    start(state, sentinels)
    start(state, nats_nodes)
    wait_ready(sentinels, redis_up, what="answering PING")
    step("forming the JetStream cluster")
    wait_ready(nats_nodes, lambda r: broker.node_ready(r, len(nats_nodes)), what="in the JetStream cluster")
    apps = state.find(role=Role.API) + state.find(role=Role.WORKER)
    step(f"starting {len(apps)} app processes")
    start(state, apps)
    wait_ready(apps, http_ready, what="ready (/readyz 200)")
    step("waiting for Sentinels to see every replica and peer")
    wait_ready(sentinels, sentinels_converged(state), what="converged")
    step("starting the front door")
    door = state.find(role=Role.FRONTDOOR)
    start(state, door)
    wait_ready(door, frontdoor_ready(state), what="seeing every replica UP", timeout=30)


def teardown(state: LabState, grace: float = 5.0) -> dict[str, Any]:
    """Stop every process of ``state`` and every marked straggler; delete namespaces.

    Traffic stops first (the front door), then everything else at once: the apps drain
    within their short grace while the servers they use shut down beside them.
    """
    door = [r for r in state.processes if r.role == Role.FRONTDOOR]
    stopped = stop_records(door, grace=grace)
    stopped += stop_records([r for r in state.processes if r.role != Role.FRONTDOOR], grace=grace)
    # Delay lines (latency faults) put their site's link back on the bridge as they stop; the
    # namespaces and the bridge go next anyway. They are faults, not lab parts: not counted.
    stop_records(list(state.delay_lines.values()), grace=grace)
    state.delay_lines = {}
    orphans = kill_marked(marker(state))
    removed = network.destroy(state.network) if state.network else []
    return {"stopped": stopped, "orphans_killed": orphans, "network_removed": removed}


def down(state_dir: str | Path, *, grace: float = 5.0) -> dict[str, Any]:
    """Stop the lab in ``state_dir``; works after any crash, and on a lab that is half up."""
    root = Path(state_dir).expanduser().resolve()
    try:
        load_state(root)
    except LabError:
        # No (readable) state: still kill whatever carries the marker, and drop namespaces
        # by the names this folder's lab would have used.
        orphans = kill_marked(str(root))
        removed = network.destroy_by_id(lab_id_for(root)) if network.is_root() else []
        return {"stopped": [], "orphans_killed": orphans, "network_removed": removed, "ports_free": True}
    with state_lock(root):
        state = load_state(root)
        state.phase = "stopping"
        save_state(state)
        result = teardown(state, grace=grace)
        root_ports = (
            state.ports
            if not state.network
            else [p for r in state.find(role=Role.FRONTDOOR) for p in r.ports.values()]
        )
        deadline = time.monotonic() + 5
        while (busy := topology.busy_ports(root_ports)) and time.monotonic() < deadline:
            time.sleep(0.1)
        result["ports_busy"] = busy
        result["ports_free"] = not busy
        for rec in state.processes:
            rec.pid, rec.start_ticks = None, None
        state.phase = "down"
        save_state(state)
    # Runtime data (JetStream store, Redis configs) goes; logs stay for the post-mortem.
    shutil.rmtree(topology.Layout(root).data, ignore_errors=True)
    return result
