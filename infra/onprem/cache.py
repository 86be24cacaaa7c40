"""The app's Redis on the cluster: a StatefulSet with AUTH, TLS only (plain port off) and a
persistent volume per pod. In prod a second pod replicates the primary over TLS.

HA choice: the ``redis`` Service always points at pod ``redis-0`` (the primary); replicas keep
a hot copy on their own volumes in other zones/hosts. If redis-0's node dies, the StatefulSet
recreates redis-0 on its volume (minutes, not seconds); promoting a replica is an operator
step. Sentinel-driven automatic failover is not deployed here (the app supports it through
AGENT_REDIS_SENTINELS if a cluster adds it).
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

# Written by the init container from env (so the password never appears in a file we ship,
# in argv or in the ConfigMap): AUTH for clients and for replication, and the replica role.
_RUNTIME_SCRIPT = f"""set -eu
ordinal="${{POD_NAME##*-}}"
{{
  printf 'requirepass %s\\nmasterauth %s\\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD"
  if [ "$ordinal" != "0" ]; then printf 'replicaof %s %s\\n' "$PRIMARY_HOST" "$PRIMARY_PORT"; fi
}} > {_RUNTIME_DIR}/runtime.conf
"""


@dataclass(frozen=True)
class CacheArgs:
    place: kube.Placement
    image: str
    replicas: int
    size_gb: float
    issuer: str
    password: kube.SecretRef
    topology_key: str
    storage_class: str | None = None
    strict_hosts: bool = False
    protect: bool = False
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class Cache(Capability):
    """Redis StatefulSet + headless and primary Services + TLS Certificate + PDB."""

    TARGET = "onprem"

    def __init__(self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        place, ns = args.place, args.place.namespace
        headless = f"{kube.REDIS}-headless"
        self.tls_secret = f"{kube.REDIS}-tls"
        self.host = kube.service_dns(kube.REDIS, ns)
        self.url = f"rediss://{self.host}:{kube.REDIS_PORT}"
        maxmemory_mb = int(args.size_gb * 1024)
        volume_gi = max(1, math.ceil(args.size_gb * 2))  # room for AOF rewrites

        # Serving certificate from the cluster CA: clients verify it with ca.crt.
        cert = kube.certificate(
            self.tls_secret,
            place,
            issuer=args.issuer,
            dns_names=[
                kube.REDIS,
                self.host,
                f"{self.host}.cluster.local",
                f"*.{headless}.{ns}.svc",
                f"*.{headless}.{ns}.svc.cluster.local",
                "localhost",
            ],
            opts=self.child(),
        )

        # Redis settings: TLS only, data on the volume (AOF), AUTH from the runtime include.
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
                        'rename-command FLUSHALL ""',
                        'rename-command DEBUG ""',
                        f"include {_RUNTIME_DIR}/runtime.conf",
                        "",
                    ]
                ),
                "runtime.sh": _RUNTIME_SCRIPT,
            },
            opts=self.child(),
        )

        # Stable per-pod DNS names, used by replicas to find the primary.
        k8s.core.v1.Service(
            headless,
            metadata=kube.meta(headless, place, kube.REDIS),
            spec=k8s.core.v1.ServiceSpecArgs(
                cluster_ip="None",
                publish_not_ready_addresses=True,
                selector=kube.selector(kube.REDIS),
                ports=[k8s.core.v1.ServicePortArgs(name="redis-tls", port=kube.REDIS_PORT)],
            ),
            opts=self.child(),
        )
        # The address the app uses: the primary only (writes must land there).
        self.service = k8s.core.v1.Service(
            kube.REDIS,
            metadata=kube.meta(kube.REDIS, place, kube.REDIS),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector={
                    **kube.selector(kube.REDIS),
                    "statefulset.kubernetes.io/pod-name": f"{kube.REDIS}-0",
                },
                ports=[k8s.core.v1.ServicePortArgs(name="redis-tls", port=kube.REDIS_PORT)],
            ),
            opts=self.child(),
        )

        password_env = [args.password.env("REDIS_PASSWORD"), args.password.env("REDISCLI_AUTH")]
        mounts = [
            k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data"),
            k8s.core.v1.VolumeMountArgs(name="conf", mount_path=_CONF_DIR, read_only=True),
            k8s.core.v1.VolumeMountArgs(name="runtime", mount_path=_RUNTIME_DIR),
            k8s.core.v1.VolumeMountArgs(name="tls", mount_path=_TLS_DIR, read_only=True),
            k8s.core.v1.VolumeMountArgs(name="scratch", mount_path="/tmp"),
        ]
        cli = f"redis-cli --tls --cacert {_TLS_DIR}/ca.crt -h localhost -p {kube.REDIS_PORT}"
        # Redis pods: restricted, spread over zones, one volume each (kept when scaled in).
        self.stateful_set = k8s.apps.v1.StatefulSet(
            kube.REDIS,
            metadata=kube.meta(kube.REDIS, place, kube.REDIS),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                service_name=headless,
                replicas=args.replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=kube.selector(kube.REDIS)),
                pod_management_policy="OrderedReady",
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
                                name="auth-config",
                                image=args.image,
                                command=["sh", f"{_CONF_DIR}/runtime.sh"],
                                env=[
                                    *password_env,
                                    k8s.core.v1.EnvVarArgs(
                                        name="POD_NAME",
                                        value_from=k8s.core.v1.EnvVarSourceArgs(
                                            field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                                                field_path="metadata.name"
                                            )
                                        ),
                                    ),
                                    k8s.core.v1.EnvVarArgs(
                                        name="PRIMARY_HOST",
                                        value=kube.peer_dns(f"{kube.REDIS}-0", headless, ns),
                                    ),
                                    k8s.core.v1.EnvVarArgs(name="PRIMARY_PORT", value=str(kube.REDIS_PORT)),
                                ],
                                volume_mounts=mounts[1:3],
                                resources=kube.resources(50, 32),
                                security_context=kube.container_security(kube.REDIS_UID),
                            )
                        ],
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="redis",
                                image=args.image,
                                command=["redis-server", f"{_CONF_DIR}/redis.conf"],
                                env=password_env[1:],
                                ports=[
                                    k8s.core.v1.ContainerPortArgs(
                                        name="redis-tls", container_port=kube.REDIS_PORT
                                    )
                                ],
                                readiness_probe=k8s.core.v1.ProbeArgs(
                                    exec_=k8s.core.v1.ExecActionArgs(
                                        command=["sh", "-c", f"{cli} ping | grep -q PONG"]
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
                                resources=kube.resources(500, math.ceil(maxmemory_mb * 1.25)),
                                security_context=kube.container_security(kube.REDIS_UID),
                                volume_mounts=mounts,
                            )
                        ],
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="conf",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name="redis-config"),
                            ),
                            kube.scratch_volume("runtime", memory=True),
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

        # At most one Redis pod evicted at a time.
        kube.pdb("redis", place, kube.REDIS, self.child())
        self.register_outputs({"url": self.url, "tlsSecret": self.tls_secret})
