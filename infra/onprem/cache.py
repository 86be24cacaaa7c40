"""The app's Redis on the cluster: a StatefulSet with AUTH, TLS only (plain port off) and a
persistent volume per pod. With HA (prod) it runs three pods, each with a Sentinel beside its
Redis: the Sentinels agree (quorum 2 of 3) on which pod is the primary and promote a replica
within seconds when the primary's pod or node is lost; the app finds the primary through them
(``AGENT_REDIS_SENTINELS``). A primary cut off from every replica refuses writes
(``min-replicas-to-write``), so the stale side of a partition cannot take writes that the
promoted side would never see.

Every pod decides its role when it starts, from the Sentinels: a pod that restarts after a
failover comes back as a replica of the current primary, never as a second primary. Only a
fresh set (no Sentinel answers) starts with pod 0 as the primary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.component import Capability
from infra.onprem import kube

_TLS_DIR = "/etc/redis/tls"
_CONF_DIR = "/etc/redis/conf"
_RUNTIME_DIR = "/run/redis"
_SENTINEL_DIR = "/run/sentinel"
# Pods in an HA set: a primary and two replicas, so three Sentinels form a majority of two.
HA_PODS = 3
# The server's memory limit over its maxmemory: room for a fork's copy-on-write pages.
FORK_MEMORY_FACTOR = 2
# Sentinel timings: a primary unreachable for 5 s is failed over, and the promotion takes a few
# seconds more. The app does not wait out the switch: a request that needs the cache retries for
# AGENT_REDIS_FAILOVER_WAIT_SECONDS (the plan leaves the app's default, 0.5 s), then answers 503
# with Retry-After; requests succeed again once the Sentinels name the promoted primary.
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 60000
# A primary that has heard from no replica for this long stops taking writes.
MIN_REPLICAS_MAX_LAG_SECONDS = 10

# Written by the init container from env (so the password never appears in a file we ship, in
# argv or in the ConfigMap): AUTH, this pod's announced name and its role, and the Sentinel's
# config (in a writable volume: Sentinel rewrites its file as the set changes).
_INIT_SCRIPT = f"""set -eu
set_name="${{POD_NAME%-*}}"
self="$POD_NAME.$HEADLESS"
primary=""
if [ "$SENTINEL" = "true" ]; then
  # The current primary, if the set already runs (after a failover it is not pod 0).
  i=0
  while [ "$i" -lt "$PODS" ] && [ -z "$primary" ]; do
    primary=$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --tls --cacert {_TLS_DIR}/ca.crt \
      -h "$set_name-$i.$HEADLESS" -p "$SENTINEL_PORT" \
      sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1) || primary=""
    i=$((i + 1))
  done
fi
[ -n "$primary" ] || primary="$set_name-0.$HEADLESS"
{{
  printf 'requirepass %s\nmasterauth %s\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD"
  printf 'replica-announce-ip %s\n' "$self"
  if [ "$primary" != "$self" ]; then printf 'replicaof %s %s\n' "$primary" "$REDIS_PORT"; fi
}} > {_RUNTIME_DIR}/runtime.conf
if [ "$SENTINEL" = "true" ]; then
  {{
    printf 'port 0\ntls-port %s\n' "$SENTINEL_PORT"
    printf 'tls-cert-file {_TLS_DIR}/tls.crt\ntls-key-file {_TLS_DIR}/tls.key\n'
    printf 'tls-ca-cert-file {_TLS_DIR}/ca.crt\ntls-auth-clients no\ntls-replication yes\n'
    printf 'dir /tmp\nrequirepass %s\nsentinel sentinel-pass %s\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD"
    printf 'sentinel resolve-hostnames yes\nsentinel announce-hostnames yes\n'
    printf 'sentinel announce-ip %s\n' "$self"
    printf 'sentinel monitor %s %s %s %s\n' "$MASTER_NAME" "$primary" "$REDIS_PORT" "$QUORUM"
    printf 'sentinel auth-pass %s %s\n' "$MASTER_NAME" "$REDIS_PASSWORD"
    printf 'sentinel down-after-milliseconds %s {DOWN_AFTER_MS}\n' "$MASTER_NAME"
    printf 'sentinel failover-timeout %s {FAILOVER_TIMEOUT_MS}\n' "$MASTER_NAME"
    printf 'sentinel parallel-syncs %s 1\n' "$MASTER_NAME"
  }} > {_SENTINEL_DIR}/sentinel.conf
fi
"""


@dataclass(frozen=True)
class CacheArgs:
    place: kube.Placement
    image: str
    ha: bool
    size_gb: float
    issuer: str  # the in-cluster CA issuer
    password: kube.SecretRef
    topology_key: str
    storage_class: str | None = None
    strict_hosts: bool = False
    protect: bool = False
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class Cache(Capability):
    """Redis (+ Sentinel) StatefulSet + headless Service + TLS Certificate + PDB; a ClusterIP
    Service when there is a single pod."""

    TARGET = "onprem"

    def __init__(self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        place, ns = args.place, args.place.namespace
        headless = f"{kube.REDIS}-headless"
        headless_fqdn = f"{headless}.{ns}.svc.cluster.local"
        pods = HA_PODS if args.ha else 1
        self.tls_secret = f"{kube.REDIS}-tls"
        self.master_name = kube.REDIS_MASTER_NAME
        pod_hosts = [f"{kube.REDIS}-{i}.{headless_fqdn}" for i in range(pods)]
        # The app's view: through the Sentinels (HA), or the one pod's Service.
        self.sentinels = [f"{h}:{kube.REDIS_SENTINEL_PORT}" for h in pod_hosts] if args.ha else []
        self.host = pod_hosts[0] if args.ha else kube.service_dns(kube.REDIS, ns)
        self.url = f"rediss://{self.host}:{kube.REDIS_PORT}"
        maxmemory_mb = int(args.size_gb * 1024)
        volume_gi = max(1, math.ceil(args.size_gb * 2))  # room for AOF rewrites

        # Serving certificate from the cluster's CA: clients verify it with ca.crt. Every pod's
        # own name is covered, since Sentinel hands out pod names.
        cert = kube.certificate(
            self.tls_secret,
            place,
            issuer=args.issuer,
            dns_names=[
                kube.REDIS,
                kube.service_dns(kube.REDIS, ns),
                f"{kube.service_dns(kube.REDIS, ns)}.cluster.local",
                f"*.{headless}.{ns}.svc",
                f"*.{headless_fqdn}",
                "localhost",
            ],
            opts=self.child(),
        )

        guard = (
            [
                "min-replicas-to-write 1",
                f"min-replicas-max-lag {MIN_REPLICAS_MAX_LAG_SECONDS}",
            ]
            if args.ha
            else []
        )
        # Redis settings: TLS only, data on the volume (AOF), AUTH and role from the runtime include.
        config = k8s.core.v1.ConfigMap(
            "redis-config",
            metadata=kube.meta("redis-config", place, kube.REDIS),
            data={
                "redis.conf": "\n".join(
                    [
                        "port 0",
                        f"tls-port {kube.REDIS_PORT}",
                        f"tls-cert-file {_TLS_DIR}/tls.crt",
                        f"tls-key-file {_TLS_DIR}/tls.key",
                        f"tls-ca-cert-file {_TLS_DIR}/ca.crt",
                        "tls-auth-clients no",
                        "tls-replication yes",
                        'tls-protocols "TLSv1.2 TLSv1.3"',
                        "dir /data",
                        "appendonly yes",
                        "appendfsync everysec",
                        f"maxmemory {maxmemory_mb}mb",
                        "maxmemory-policy volatile-lru",
                        "protected-mode yes",
                        *guard,
                        'rename-command FLUSHALL ""',
                        'rename-command DEBUG ""',
                        f"include {_RUNTIME_DIR}/runtime.conf",
                        "",
                    ]
                ),
                "init.sh": _INIT_SCRIPT,
                "serve.sh": kube.SERVE_SCRIPT,
            },
            opts=self.child(),
        )

        # Stable per-pod DNS names: how replicas, Sentinels and the app reach each pod.
        k8s.core.v1.Service(
            headless,
            metadata=kube.meta(headless, place, kube.REDIS),
            spec=k8s.core.v1.ServiceSpecArgs(
                cluster_ip="None",
                publish_not_ready_addresses=True,
                selector=kube.selector(kube.REDIS),
                ports=[
                    k8s.core.v1.ServicePortArgs(name="redis-tls", port=kube.REDIS_PORT),
                    *(
                        [k8s.core.v1.ServicePortArgs(name="sentinel-tls", port=kube.REDIS_SENTINEL_PORT)]
                        if args.ha
                        else []
                    ),
                ],
            ),
            opts=self.child(),
        )
        if not args.ha:
            # The address the app uses when there is one pod.
            k8s.core.v1.Service(
                kube.REDIS,
                metadata=kube.meta(kube.REDIS, place, kube.REDIS),
                spec=k8s.core.v1.ServiceSpecArgs(
                    type="ClusterIP",
                    selector=kube.selector(kube.REDIS),
                    ports=[k8s.core.v1.ServicePortArgs(name="redis-tls", port=kube.REDIS_PORT)],
                ),
                opts=self.child(),
            )

        password_env = [args.password.env("REDIS_PASSWORD"), args.password.env("REDISCLI_AUTH")]
        tls_cli = f"redis-cli --tls --cacert {_TLS_DIR}/ca.crt -h localhost"
        mounts = {
            "data": k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data"),
            "conf": k8s.core.v1.VolumeMountArgs(name="conf", mount_path=_CONF_DIR, read_only=True),
            "runtime": k8s.core.v1.VolumeMountArgs(name="runtime", mount_path=_RUNTIME_DIR),
            "sentinel": k8s.core.v1.VolumeMountArgs(name="sentinel", mount_path=_SENTINEL_DIR),
            "tls": k8s.core.v1.VolumeMountArgs(name="tls", mount_path=_TLS_DIR, read_only=True),
            "scratch": k8s.core.v1.VolumeMountArgs(name="scratch", mount_path="/tmp"),
        }
        pod_name = k8s.core.v1.EnvVarArgs(
            name="POD_NAME",
            value_from=k8s.core.v1.EnvVarSourceArgs(
                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="metadata.name")
            ),
        )
        init_env = [
            *password_env,
            pod_name,
            k8s.core.v1.EnvVarArgs(name="HEADLESS", value=headless_fqdn),
            k8s.core.v1.EnvVarArgs(name="PODS", value=str(pods)),
            k8s.core.v1.EnvVarArgs(name="QUORUM", value=str(pods // 2 + 1)),
            k8s.core.v1.EnvVarArgs(name="SENTINEL", value="true" if args.ha else "false"),
            k8s.core.v1.EnvVarArgs(name="MASTER_NAME", value=self.master_name),
            k8s.core.v1.EnvVarArgs(name="REDIS_PORT", value=str(kube.REDIS_PORT)),
            k8s.core.v1.EnvVarArgs(name="SENTINEL_PORT", value=str(kube.REDIS_SENTINEL_PORT)),
        ]
        containers = [
            k8s.core.v1.ContainerArgs(
                name="redis",
                image=args.image,
                command=kube.serve_command(
                    f"{_CONF_DIR}/serve.sh",
                    f"{_TLS_DIR}/tls.crt",
                    # Redis (7.0.1+) reads its TLS files again on CONFIG SET, paths unchanged.
                    f"{tls_cli} -p {kube.REDIS_PORT} CONFIG SET tls-cert-file {_TLS_DIR}/tls.crt "
                    f"tls-key-file {_TLS_DIR}/tls.key tls-ca-cert-file {_TLS_DIR}/ca.crt | grep -q OK",
                    ["redis-server", f"{_CONF_DIR}/redis.conf"],
                ),
                env=[*password_env[1:], pod_name],
                ports=[k8s.core.v1.ContainerPortArgs(name="redis-tls", container_port=kube.REDIS_PORT)],
                readiness_probe=k8s.core.v1.ProbeArgs(
                    exec_=k8s.core.v1.ExecActionArgs(
                        command=["sh", "-c", f"{tls_cli} -p {kube.REDIS_PORT} ping | grep -q PONG"]
                    ),
                    period_seconds=10,
                    timeout_seconds=5,
                    failure_threshold=3,
                ),
                liveness_probe=k8s.core.v1.ProbeArgs(
                    tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=kube.REDIS_PORT),
                    initial_delay_seconds=15,
                    period_seconds=10,
                    failure_threshold=6,
                ),
                # A snapshot or replica sync forks the server: under writes its copy-on-write
                # pages can reach the data set's size again (Redis's admin guide: up to 2x).
                resources=kube.resources(500, maxmemory_mb * FORK_MEMORY_FACTOR),
                security_context=kube.container_security(kube.REDIS_UID),
                volume_mounts=[mounts[m] for m in ("data", "conf", "runtime", "tls", "scratch")],
            )
        ]
        if args.ha:
            # The pod's Sentinel: watches the set, votes, and promotes a replica on a loss.
            containers.append(
                k8s.core.v1.ContainerArgs(
                    name="sentinel",
                    image=args.image,
                    command=kube.serve_command(
                        f"{_CONF_DIR}/serve.sh",
                        f"{_TLS_DIR}/tls.crt",
                        kube.RESTART,  # Sentinel cannot reload TLS; its own config is on a volume
                        ["redis-server", f"{_SENTINEL_DIR}/sentinel.conf", "--sentinel"],
                    ),
                    env=[*password_env[1:], pod_name],
                    ports=[
                        k8s.core.v1.ContainerPortArgs(
                            name="sentinel-tls", container_port=kube.REDIS_SENTINEL_PORT
                        )
                    ],
                    readiness_probe=k8s.core.v1.ProbeArgs(
                        exec_=k8s.core.v1.ExecActionArgs(
                            command=[
                                "sh",
                                "-c",
                                f"{tls_cli} -p {kube.REDIS_SENTINEL_PORT} ping | grep -q PONG",
                            ]
                        ),
                        period_seconds=10,
                        timeout_seconds=5,
                        failure_threshold=3,
                    ),
                    liveness_probe=k8s.core.v1.ProbeArgs(
                        tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=kube.REDIS_SENTINEL_PORT),
                        initial_delay_seconds=15,
                        period_seconds=10,
                        failure_threshold=6,
                    ),
                    resources=kube.resources(100, 64),
                    security_context=kube.container_security(kube.REDIS_UID),
                    volume_mounts=[mounts[m] for m in ("conf", "sentinel", "tls", "scratch")],
                )
            )
        # Redis pods: restricted, spread over zones, one volume each (kept when scaled in).
        self.stateful_set = k8s.apps.v1.StatefulSet(
            kube.REDIS,
            metadata=kube.meta(kube.REDIS, place, kube.REDIS),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                service_name=headless,
                replicas=pods,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=kube.selector(kube.REDIS)),
                # All pods start together: a pod looks for the set's Sentinels, and on a fresh set
                # pod 0 becomes the primary whichever pod starts first.
                pod_management_policy="Parallel",
                update_strategy=k8s.apps.v1.StatefulSetUpdateStrategyArgs(type="RollingUpdate"),
                persistent_volume_claim_retention_policy=k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                    when_deleted="Retain", when_scaled="Retain"
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=kube.labels(place.labels, kube.REDIS)),
                    spec=k8s.core.v1.PodSpecArgs(
                        automount_service_account_token=False,
                        enable_service_links=False,
                        security_context=kube.pod_security(kube.REDIS_UID),
                        topology_spread_constraints=kube.spread(
                            kube.REDIS, args.topology_key, strict_hosts=args.strict_hosts
                        ),
                        termination_grace_period_seconds=30,
                        init_containers=[
                            k8s.core.v1.ContainerArgs(
                                name="config",
                                image=args.image,
                                command=["sh", f"{_CONF_DIR}/init.sh"],
                                env=init_env,
                                volume_mounts=[
                                    mounts[m] for m in ("conf", "runtime", "sentinel", "tls", "scratch")
                                ],
                                resources=kube.resources(50, 32),
                                security_context=kube.container_security(kube.REDIS_UID),
                            )
                        ],
                        containers=containers,
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="conf",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name="redis-config"),
                            ),
                            kube.scratch_volume("runtime", memory=True),
                            kube.scratch_volume("sentinel", memory=True),
                            k8s.core.v1.VolumeArgs(
                                name="tls",
                                secret=k8s.core.v1.SecretVolumeSourceArgs(
                                    secret_name=self.tls_secret, default_mode=0o440
                                ),
                            ),
                            kube.scratch_volume(),
                        ],
                    ),
                ),
                volume_claim_templates=[
                    k8s.core.v1.PersistentVolumeClaimArgs(
                        metadata=k8s.meta.v1.ObjectMetaArgs(name="data", labels=dict(place.labels)),
                        spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                            access_modes=["ReadWriteOnce"],
                            storage_class_name=args.storage_class,
                            resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                                requests={"storage": f"{volume_gi}Gi"}
                            ),
                        ),
                    )
                ],
            ),
            opts=self.child(protect=args.protect, depends_on=[cert, config, *args.depends_on]),
        )

        # At most one Redis pod evicted at a time (two of three Sentinels stay to vote).
        kube.pdb("redis", place, kube.REDIS, self.child())
        self.register_outputs({"url": self.url, "sentinels": self.sentinels, "tlsSecret": self.tls_secret})
