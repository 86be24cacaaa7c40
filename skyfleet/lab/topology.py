"""What a lab is made of: addresses, ports, files and the process of every role in every site.

Everything here is derived from the LabConfig alone (ports from ``base_port`` in a fixed
order), so a plan is reproducible and ``up`` can check every port before starting anything.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import skyfleet
from agent_app.contract import API_COMMAND, WORKER_COMMAND, Env
from skyfleet.lab import broker, frontdoor, replication
from skyfleet.lab.config import WITNESS, LabConfig
from skyfleet.lab.credentials import API_KEY_FILE, REDIS_PASSWORD_FILE, SERVER_PEM_FILE
from skyfleet.lab.errors import LabError
from skyfleet.lab.procs import ProcessRecord, Role
from skyfleet.lab.state import Network

LOOPBACK = "127.0.0.1"
MASTER_NAME = "skyfleet"
# Ports per member, in allocation order.
SITE_PORTS = ("redis", "sentinel", "client", "cluster", "monitor", "worker")
WITNESS_PORTS = ("redis", "sentinel", "client", "cluster", "monitor")
# Unix socket paths are limited to 108 bytes by the kernel.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Layout:
    """Where a lab keeps its files, all inside the state folder."""

    root: Path

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def haproxy_cfg(self) -> Path:
        return self.root / "frontdoor" / "haproxy.cfg"

    @property
    def admin_socket(self) -> Path:
        return self.root / "frontdoor" / "admin.sock"

    @property
    def frontdoor_log(self) -> Path:
        return self.logs / "frontdoor.log"

    def member_dir(self, kind: str, member: str) -> Path:
        return self.data / kind / member


@dataclass
class Plan:
    records: list[ProcessRecord]
    files: dict[Path, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    http_port: int = 0
    https_port: int | None = None


def allocate_ports(config: LabConfig) -> tuple[dict[str, dict[str, int]], int, int | None]:
    """Ports for every member from ``base_port``: front door first, then site by site."""
    next_port = config.base_port
    https_port = None
    if config.tls:
        https_port, next_port = next_port, next_port + 1
    http_port, next_port = next_port, next_port + 1
    ports: dict[str, dict[str, int]] = {}
    for member in config.quorum_members:
        names = (
            list(WITNESS_PORTS)
            if member == WITNESS
            else [*SITE_PORTS] + [f"api-{i}" for i in range(config.replicas)]
        )
        ports[member] = {}
        for name in names:
            ports[member][name] = next_port
            next_port += 1
    if next_port > 65535:
        raise LabError(f"base_port: {config.base_port} leaves too few ports (needs up to {next_port - 1})")
    return ports, http_port, https_port


def busy_ports(ports: list[int], host: str = LOOPBACK) -> list[int]:
    """Ports some other process holds on ``host`` (bind test, as the server will bind)."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def binary(name: str, config: LabConfig) -> str:
    """A server binary: next to the lab's interpreter (PyPI wheels), else on PATH/sbin."""
    beside = Path(config.python).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if not found:
        raise LabError(f"{name} is not installed (looked beside {config.python} and on PATH)")
    return found


def project_root() -> Path:
    return Path(skyfleet.__file__).resolve().parent.parent


def build(config: LabConfig, layout: Layout, network: Network | None, redis_password: str) -> Plan:
    """Every process record (not yet started) and every config file of the lab."""
    if len(str(layout.admin_socket)) > MAX_SOCKET_PATH:
        raise LabError(
            f"state_dir: {layout.root} is too long for a Unix socket path "
            f"({len(str(layout.admin_socket))} > {MAX_SOCKET_PATH} bytes); choose a shorter state folder"
        )
    ports, http_port, https_port = allocate_ports(config)
    host = {m: (network.sites[m].address if network else LOOPBACK) for m in config.quorum_members}
    netns = {m: (network.sites[m].namespace if network else None) for m in config.quorum_members}
    redis_server = binary("redis-server", config)
    plan = Plan(records=[], http_port=http_port, https_port=https_port)
    plan.ports = sorted(
        [p for member in ports.values() for p in member.values()]
        + [http_port]
        + ([https_port] if https_port else [])
    )
    cwd = str(project_root())

    def record(
        name: str, role: Role, member: str, argv: list[str], used: dict[str, int], **kw: object
    ) -> ProcessRecord:
        rec = ProcessRecord.model_validate(
            {
                "name": name,
                "role": role,
                "site": member,
                "argv": argv,
                "cwd": cwd,
                "netns": netns[member],
                "log_file": str(layout.logs / f"{name}.log"),
                "host": host[member],
                "ports": used,
                **kw,
            }
        )
        plan.records.append(rec)
        return rec

    # Caches: the primary site's Redis, the others replicate it (earlier sites win promotion
    # first, by replica-priority). With two sites the witness holds a replica too, one that is
    # never promoted (priority 0): after a site loss, a turn still reaches a second copy
    # before it is acknowledged (WAIT 1), so RPO stays 0 and writes stay available.
    primary = (host[config.primary], ports[config.primary]["redis"])
    for i, site in enumerate(config.quorum_members):
        data_dir = layout.member_dir("redis", site)
        conf = data_dir / "redis.conf"
        plan.files[conf] = replication.render_redis_conf(
            host=host[site],
            port=ports[site]["redis"],
            data_dir=data_dir,
            password=redis_password,
            replica_of=None if site == config.primary else primary,
            priority=0 if site == WITNESS else 100 + i,
            min_replicas=1 if len(config.sites) > 1 else 0,  # as AGENT_REDIS_WAIT_REPLICAS
        )
        record(f"{site}-redis", Role.REDIS, site, [redis_server, str(conf)], {"redis": ports[site]["redis"]})

    # Sentinels: one per site (plus the witness); a majority must agree to fail over.
    members = config.quorum_members
    quorum = len(members) // 2 + 1
    for member in members:
        data_dir = layout.member_dir("sentinel", member)
        conf = data_dir / "sentinel.conf"
        plan.files[conf] = replication.render_sentinel_conf(
            host=host[member],
            port=ports[member]["sentinel"],
            data_dir=data_dir,
            master_name=MASTER_NAME,
            primary=primary,
            quorum=quorum,
            password=redis_password,
            down_after_ms=config.redis_down_after_ms,
            failover_timeout_ms=config.redis_failover_timeout_ms,
        )
        record(
            f"{member}-sentinel",
            Role.SENTINEL,
            member,
            [redis_server, str(conf), "--sentinel"],
            {"sentinel": ports[member]["sentinel"]},
        )

    # Brokers: one JetStream cluster across all members.
    nats_server = binary("nats-server", config)
    nats_nodes = []
    for member in members:
        data_dir = layout.member_dir("nats", member)
        conf = data_dir / "nats.conf"
        routes = (
            [f"{host[m]}:{ports[m]['cluster']}" for m in members if m != member] if len(members) > 1 else []
        )
        plan.files[conf] = broker.render_nats_conf(
            server_name=member,
            host=host[member],
            port=ports[member]["client"],
            monitor_port=ports[member]["monitor"],
            cluster_port=ports[member]["cluster"],
            cluster_name=f"skyfleet-{config.lab_id}",
            routes=routes,
            store_dir=data_dir / "jetstream",
        )
        nats_nodes.append(
            record(
                f"{member}-nats",
                Role.NATS,
                member,
                [nats_server, "-c", str(conf), "-js"],
                {k: ports[member][k] for k in ("client", "cluster", "monitor")},
            )
        )

    # The app: api replicas and a worker per site, configured only through AGENT_* variables.
    sentinel_addr = {m: f"{host[m]}:{ports[m]['sentinel']}" for m in members}
    api_keys = layout.secrets / API_KEY_FILE
    servers: list[frontdoor.Server] = []
    for site in config.sites:
        local_nats = next(n for n in nats_nodes if n.site == site)
        env = {
            Env.SITE.value: site,
            Env.LOG_LEVEL.value: "INFO",
            Env.REDIS_URL.value: f"redis://{host[site]}:{ports[site]['redis']}/0",
            Env.REDIS_SENTINELS.value: ",".join(
                [sentinel_addr[site], *[a for m, a in sentinel_addr.items() if m != site]]
            ),
            Env.REDIS_SENTINEL_MASTER.value: MASTER_NAME,
            Env.REDIS_WAIT_REPLICAS.value: "1" if len(config.sites) > 1 else "0",
            Env.REDIS_FAILOVER_WAIT_SECONDS.value: "3",
            # A JetStream stream leader re-election after a node loss takes a few seconds.
            Env.QUEUE_FAILOVER_WAIT_SECONDS.value: "8",
            # A short lease (kept alive by the worker's heartbeat while a task runs), so a task
            # whose worker was cut off is redelivered within seconds, not half a minute.
            Env.TASK_LEASE_SECONDS.value: "10",
            Env.QUEUE_URL.value: broker.queue_url(local_nats, nats_nodes),
            Env.API_KEYS_FILE.value: str(api_keys),
            Env.SHUTDOWN_GRACE_SECONDS.value: "2",
            # One lab key drives all the drill load; the per-key limit would throttle it.
            Env.RATE_LIMIT_PER_MINUTE.value: "1000000",
            **config.app_env,
            "PYTHONPATH": cwd,
            "PYTHONUNBUFFERED": "1",
        }
        secret_env = {Env.REDIS_PASSWORD.value: REDIS_PASSWORD_FILE}
        for i in range(config.replicas):
            name = f"{site}-api-{i}"
            port = ports[site][f"api-{i}"]
            record(
                name,
                Role.API,
                site,
                [config.python, *API_COMMAND[1:]],
                {"http": port},
                index=i,
                env={**env, Env.PORT.value: str(port), Env.INSTANCE.value: name},
                secret_env=secret_env,
            )
            servers.append(frontdoor.Server(name=name, site=site, host=host[site], port=port))
        record(
            f"{site}-worker",
            Role.WORKER,
            site,
            [config.python, *WORKER_COMMAND[1:]],
            {"http": ports[site]["worker"]},
            env={**env, Env.PORT.value: str(ports[site]["worker"]), Env.INSTANCE.value: f"{site}-worker"},
            secret_env=secret_env,
        )

    # The front door, in the root namespace, in front of every replica of every site.
    plan.files[layout.haproxy_cfg] = frontdoor.render_haproxy_cfg(
        config,
        servers=servers,
        http_bind=f"{LOOPBACK}:{http_port}",
        https_bind=f"{LOOPBACK}:{https_port}" if https_port else None,
        pem_file=layout.secrets / SERVER_PEM_FILE,
        admin_socket=layout.admin_socket,
    )
    plan.records.append(
        ProcessRecord(
            name="frontdoor",
            role=Role.FRONTDOOR,
            site="edge",
            argv=[binary("haproxy", config), "-db", "-f", str(layout.haproxy_cfg)],
            cwd=cwd,
            log_file=str(layout.frontdoor_log),
            host=LOOPBACK,
            ports={"http": http_port, **({"https": https_port} if https_port else {})},
        )
    )
    return plan
