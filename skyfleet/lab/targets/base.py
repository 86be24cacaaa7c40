"""What every site target hands the lab: its pods, its managed services' processes, its load
balancer, its names, and what it could not reproduce; plus the managed-cache emulation the
cloud targets share (a primary, replicas, and a failover that moves the endpoint)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyfleet.lab.lb import LoadBalancerSpec
from skyfleet.lab.model import PlanValues, PodSpec
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.lab.values import LabValues
from skyfleet.plan import Plan


@dataclass
class ServiceProcess:
    """A process that stands in for a managed service (not a container of the plan)."""

    pod: str  # the pod (namespace) it runs in, within its site
    name: str
    kind: str  # cache, sentinel, queue, broker
    argv: list[str]
    files: dict[Path, bytes | str] = field(default_factory=dict)  # written 0600 before start
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    tls: bool = False
    password: str | None = None  # for a Redis readiness check


@dataclass
class Endpoint:
    """A managed endpoint name that follows a failover (it points at the current primary)."""

    name: str
    service: str  # the cache it belongs to
    pod: str  # the pod it points at now


@dataclass
class Context:
    """What a target needs from the lab to build its site."""

    values: LabValues
    public_ca: CertificateAuthority
    state_dir: Path
    max_replicas: int | None
    hosts_file: Callable[[str], Path]  # site -> its hosts file


@dataclass
class SiteTwin:
    stack: str
    target: str
    site: str
    plan: Plan
    plan_values: PlanValues
    app_pods: list[PodSpec] = field(default_factory=list)
    service_pods: list[str] = field(default_factory=list)
    services: list[ServiceProcess] = field(default_factory=list)
    lb: LoadBalancerSpec | None = None
    # Names the site's pods resolve (name -> pod names whose addresses it has, or addresses).
    names: dict[str, list[str]] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    # Variables the platform gives every app container (credentials, endpoint overrides), and
    # those it gives one workload's only (workload name -> variables).
    platform_env: dict[str, str] = field(default_factory=dict)
    workload_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Private CAs of the site's cert-manager issuers (issuer name -> CA), "public" for the web PKI.
    issuers: dict[str, CertificateAuthority] = field(default_factory=dict)
    search_domains: list[str] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)
    capped: dict[str, tuple[int, int]] = field(default_factory=dict)  # workload -> (planned, run)
    # Steps after the site's managed services are up (create queues), and after its stateful
    # pods are ready (the work of a Job the lab cannot run), given the pods' addresses.
    after_services: list[Callable[[Mapping[str, str]], None]] = field(default_factory=list)
    after_pods: list[Callable[[Mapping[str, str]], None]] = field(default_factory=list)

    def cap(self, spec: PodSpec, max_replicas: int | None) -> PodSpec:
        if max_replicas is None or spec.replicas <= max_replicas or spec.kind == "statefulset":
            return spec
        self.capped[spec.name] = (spec.replicas, max_replicas)
        from dataclasses import replace

        return replace(spec, replicas=max_replicas)

    def config(self, key: str) -> Any:
        """A value of the stack's config (``skyfleet:<key>``), decoded."""
        import json

        value = self.plan.config.get(f"skyfleet:{key}")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value


def one(plan: Plan, typ: str) -> Any:
    found = plan.of_type(typ)
    if len(found) != 1:
        raise ValueError(f"{plan.stack}: expected one {typ} in the plan, found {len(found)}")
    return found[0]


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else "unknown"


def managed_cache(
    site: SiteTwin,
    *,
    service: str,
    nodes: Sequence[str],
    port: int,
    password: str,
    server_pem: Mapping[str, tuple[bytes, bytes]],  # node pod -> (cert, key)
    ca_pem: bytes,
    failover: bool,
    endpoint_names: Sequence[str],
    addresses: Mapping[str, str],
    hosts_file: Path,
    control_pod: str,
    state_dir: Path,
) -> None:
    """A managed Redis: a primary and replicas over TLS with AUTH and, with automatic failover,
    three Sentinels (one per node, one in the site's control pod) that promote a replica and
    move the endpoint names to it, as the provider's DNS does."""
    folder = state_dir / "services" / site.site / service
    primary = nodes[0]
    for node in nodes:
        cert, key = server_pem[node]
        conf = folder / f"{node}.conf"
        lines = [
            f"bind {addresses[node]}",
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {folder / node}.crt",
            f"tls-key-file {folder / node}.key",
            f"tls-ca-cert-file {folder / 'ca.crt'}",
            "tls-auth-clients no",
            "tls-replication yes",
            f"requirepass {password}",
            f"masterauth {password}",
            f"replica-announce-ip {addresses[node]}",
            "save ''",
            "appendonly no",
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
            f'dir "{folder}"',
            "set-proc-title no",
            "daemonize no",
            'logfile ""',
        ]
        if node != primary:
            lines.append(f"replicaof {addresses[primary]} {port}")
        site.services.append(
            ServiceProcess(
                pod=node,
                name=f"{service}-{node}",
                kind="cache",
                argv=["redis-server", str(conf)],
                files={
                    conf: "\n".join(lines) + "\n",
                    folder / f"{node}.crt": cert,
                    folder / f"{node}.key": key,
                    folder / "ca.crt": ca_pem,
                },
                port=port,
                tls=True,
                password=password,
            )
        )
    for name in endpoint_names:
        site.endpoints.append(Endpoint(name=name, service=service, pod=primary))
        site.names[name] = [primary]
    if not failover or len(nodes) < 2:
        return
    hook = folder / "moved.sh"
    hook_text = (
        "#!/bin/sh\n# Sentinel: <master> <role> <state> <from-ip> <from-port> <to-ip> <to-port>\n"
        + "".join(
            f'"{sys.executable}" -m skyfleet.lab.names set "{hosts_file}" "{n}" "$6"\n'
            for n in endpoint_names
        )
    )
    for i, pod in enumerate([*nodes[:2], control_pod]):
        conf = folder / f"sentinel-{i}.conf"
        text = "\n".join(
            [
                f"bind {addresses[pod]}",
                # TLS everywhere: Sentinels speak it to each other as to the nodes.
                "port 0",
                "tls-port 26379",
                "tls-auth-clients no",
                f'dir "{folder}"',
                "daemonize no",
                "set-proc-title no",
                'logfile ""',
                "tls-replication yes",
                # Sentinel speaks TLS to the nodes with a node's key pair (clients are not checked).
                f"tls-cert-file {folder / nodes[0]}.crt",
                f"tls-key-file {folder / nodes[0]}.key",
                f"tls-ca-cert-file {folder / 'ca.crt'}",
                f"sentinel monitor {service} {addresses[primary]} {port} 2",
                f"sentinel auth-pass {service} {password}",
                f"sentinel down-after-milliseconds {service} {MANAGED_DOWN_AFTER_MS}",
                f"sentinel failover-timeout {service} {MANAGED_FAILOVER_TIMEOUT_MS}",
                f"sentinel client-reconfig-script {service} {hook}",
                "",
            ]
        )
        site.services.append(
            ServiceProcess(
                pod=pod,
                name=f"{service}-sentinel-{i}",
                kind="sentinel",
                argv=["redis-server", str(conf), "--sentinel"],
                files={conf: text, hook: hook_text},
                port=26379,
            )
        )


# The lab's managed failover: a node unreachable for this long is replaced. The providers
# publish no such figure for a single node's loss; these are noted with every report.
MANAGED_DOWN_AFTER_MS = 5000
MANAGED_FAILOVER_TIMEOUT_MS = 30000
