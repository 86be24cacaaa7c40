"""The app's queue on the cluster: NATS JetStream as a StatefulSet (three nodes forming a
JetStream cluster in prod), TLS for clients and cluster routes from cert-manager, a volume per
node, and a Job that creates the task stream and its dead-letter stream.

Clients authenticate: one NATS user per role (api, worker, and the setup Job's ``streams``), each
allowed exactly the subjects the app's permission table lists for it
(``agent_app.queues.permissions.nats_permissions``) and nothing else; passwords are generated
into Kubernetes Secrets and reach the server through its environment, never its ConfigMap.

Dead-lettering: JetStream has no native redrive. The worker's consumer stops redelivering
after ``max_deliver`` attempts (carried in AGENT_QUEUE_URL) and the worker publishes the task
to the dead-letter subject, which the DLQ stream keeps for ``dlq_retention_seconds``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from agent_app import contract
from agent_app.queues import permissions
from infra.component import Capability
from infra.onprem import kube

STREAM = "AGENT_TASKS"
SUBJECT = "agent.tasks"
DLQ_STREAM = permissions.nats_dlq_stream(STREAM)
DLQ_SUBJECT = "agent.tasks.dlq"
# The setup Job's user (the app's roles are the others).
STREAMS_USER = "streams"
# JetStream's file store limit as a share of its volume (NATS's MB are MiB): the filesystem's
# reserve and metadata take the rest, and JetStream disables itself when a write finds no room.
JETSTREAM_DISK_SHARE = 0.85

_TLS_DIR = "/etc/nats/tls"
_CONF_DIR = "/etc/nats/conf"
_NS = 1_000_000_000  # JetStream durations are nanoseconds


@dataclass(frozen=True)
class QueueArgs:
    place: kube.Placement
    # NATS user (api, worker, streams) -> the Secret key holding its password.
    users: Mapping[str, kube.SecretRef]
    image: str
    box_image: str
    exporter_image: str
    replicas: int
    storage_gb: int
    issuer: str
    max_delivery_attempts: int
    retention_seconds: int
    dlq_retention_seconds: int
    topology_key: str
    storage_class: str | None = None
    strict_hosts: bool = False
    protect: bool = False
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


def password_env(user: str) -> str:
    """The variable the server reads ``user``'s password from (set from its Secret)."""
    return f"NATS_{user.upper()}_PASSWORD"


def _authorization(args: QueueArgs) -> list[str]:
    """One user per role with exactly its allow lists; an empty list would mean "anything",
    so every role has at least its inbox to subscribe on."""
    allowed = permissions.nats_permissions(STREAM, SUBJECT, DLQ_SUBJECT)
    lines = ["authorization {", "  users: ["]
    for user in args.users:
        perms = json.dumps(allowed[user])  # nats.conf reads JSON values as they are
        lines.append(f'    {{user: "{user}", password: ${password_env(user)}, permissions: {perms}}}')
    lines += ["  ]", "}"]
    return lines


def _server_config(args: QueueArgs, headless: str) -> str:
    """nats.conf: TLS on the client port, authenticated users, JetStream on the volume, routes
    to every peer."""
    tls = (
        f'tls {{\n  cert_file: "{_TLS_DIR}/tls.crt"\n  key_file: "{_TLS_DIR}/tls.key"\n'
        f'  ca_file: "{_TLS_DIR}/ca.crt"\n'
    )
    lines = [
        "server_name: $POD_NAME",
        f"port: {kube.NATS_CLIENT_PORT}",
        f"http_port: {kube.NATS_MONITOR_PORT}",
        "lame_duck_duration: 30s",
        'pid_file: "/data/nats.pid"',
        tls + "  timeout: 5\n}",
        "jetstream {",
        '  store_dir: "/data"',
        "  max_memory_store: 256MB",
        f"  max_file_store: {int(args.storage_gb * 1024 * JETSTREAM_DISK_SHARE)}MB",
        "}",
        *_authorization(args),
    ]
    if args.replicas > 1:
        peers = [
            kube.peer_dns(f"{kube.NATS}-{i}", headless, args.place.namespace) for i in range(args.replicas)
        ]
        routes = ", ".join(f'"nats://{p}:{kube.NATS_CLUSTER_PORT}"' for p in peers)
        lines += [
            "cluster {",
            '  name: "skyfleet"',
            f"  port: {kube.NATS_CLUSTER_PORT}",
            f"  routes: [{routes}]",
            # Routes authenticate each other with the cluster CA (mutual TLS).
            "  " + tls.replace("\n  ", "\n    ") + "    verify: true\n  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def stream_configs(args: QueueArgs) -> dict[str, dict[str, object]]:
    """JetStream stream definitions (the server's StreamConfig JSON) for the setup job."""
    replicas = min(3, args.replicas)
    common = {"storage": "file", "num_replicas": replicas, "discard": "old", "max_msgs": -1, "max_bytes": -1}
    return {
        "tasks.json": {
            "name": STREAM,
            "subjects": [SUBJECT],
            # Work-queue retention: a task leaves the stream once a worker acks it.
            "retention": "workqueue",
            "max_age": args.retention_seconds * _NS,
            "duplicate_window": 120 * _NS,
            "metadata": {"skyfleet.max_deliver": str(args.max_delivery_attempts)},
            **common,
        },
        "dlq.json": {
            "name": DLQ_STREAM,
            "subjects": [DLQ_SUBJECT],
            "retention": "limits",
            "max_age": args.dlq_retention_seconds * _NS,
            **common,
        },
    }


class Queue(Capability):
    """NATS StatefulSet + Services + TLS Certificate + config + stream Job + PDB."""

    TARGET = "onprem"

    def __init__(self, name: str, args: QueueArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        place, ns = args.place, args.place.namespace
        headless = f"{kube.NATS}-headless"
        self.tls_secret = f"{kube.NATS}-tls"
        host = kube.service_dns(kube.NATS, ns)
        # The app's AGENT_QUEUE_URL per role: its own user.
        self.urls = {
            user: contract.nats_queue_url(
                f"{host}:{kube.NATS_CLIENT_PORT}",
                stream=STREAM,
                subject=SUBJECT,
                dlq_subject=DLQ_SUBJECT,
                max_deliver=args.max_delivery_attempts,
                tls=True,
                user=user,
            )
            for user in args.users
            if user != STREAMS_USER
        }

        # Certificate for clients (nats.<ns>.svc) and for the cluster routes between pods.
        cert = kube.certificate(
            self.tls_secret,
            place,
            issuer=args.issuer,
            dns_names=[
                kube.NATS,
                host,
                f"{host}.cluster.local",
                f"*.{headless}.{ns}.svc",
                f"*.{headless}.{ns}.svc.cluster.local",
            ],
            opts=self.child(),
        )

        # Server config and the stream definitions the job applies.
        config = k8s.core.v1.ConfigMap(
            "nats-config",
            metadata=kube.meta("nats-config", place, kube.NATS),
            data={"nats.conf": _server_config(args, headless), "serve.sh": kube.SERVE_SCRIPT},
            opts=self.child(),
        )
        stream_files = {k: json.dumps(v, indent=2) for k, v in stream_configs(args).items()}
        streams = k8s.core.v1.ConfigMap(
            "nats-streams",
            metadata=kube.meta("nats-streams", place, kube.STREAMS_JOB),
            data=stream_files,
            opts=self.child(),
        )

        # Per-pod DNS names for routes; the client Service spreads the app over all nodes.
        k8s.core.v1.Service(
            headless,
            metadata=kube.meta(headless, place, kube.NATS),
            spec=k8s.core.v1.ServiceSpecArgs(
                cluster_ip="None",
                publish_not_ready_addresses=True,
                selector=kube.selector(kube.NATS),
                ports=[
                    k8s.core.v1.ServicePortArgs(name="client", port=kube.NATS_CLIENT_PORT),
                    k8s.core.v1.ServicePortArgs(name="cluster", port=kube.NATS_CLUSTER_PORT),
                ],
            ),
            opts=self.child(),
        )
        self.service = k8s.core.v1.Service(
            kube.NATS,
            metadata=kube.meta(kube.NATS, place, kube.NATS),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=kube.selector(kube.NATS),
                ports=[k8s.core.v1.ServicePortArgs(name="client", port=kube.NATS_CLIENT_PORT)],
            ),
            opts=self.child(),
        )

        health = "/healthz?js-enabled-only=true"
        self.stateful_set = k8s.apps.v1.StatefulSet(
            kube.NATS,
            metadata=kube.meta(kube.NATS, place, kube.NATS),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                service_name=headless,
                replicas=args.replicas,
                # All nodes start together: a JetStream cluster needs its peers to elect a leader.
                pod_management_policy="Parallel",
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=kube.selector(kube.NATS)),
                update_strategy=k8s.apps.v1.StatefulSetUpdateStrategyArgs(type="RollingUpdate"),
                persistent_volume_claim_retention_policy=k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                    when_deleted="Retain", when_scaled="Retain"
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=kube.labels(place.labels, kube.NATS)),
                    spec=k8s.core.v1.PodSpecArgs(
                        automount_service_account_token=False,
                        enable_service_links=False,
                        security_context=kube.pod_security(kube.NATS_UID),
                        topology_spread_constraints=kube.spread(
                            kube.NATS, args.topology_key, strict_hosts=args.strict_hosts
                        ),
                        # Lame-duck mode hands clients to the other nodes before exit.
                        termination_grace_period_seconds=60,
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="nats",
                                image=args.image,
                                # NATS reloads its certificate on SIGHUP, without a restart.
                                command=kube.serve_command(
                                    f"{_CONF_DIR}/serve.sh",
                                    f"{_TLS_DIR}/tls.crt",
                                    kube.RELOAD_BY_SIGHUP,
                                    ["nats-server", "--config", f"{_CONF_DIR}/nats.conf"],
                                ),
                                env=[
                                    k8s.core.v1.EnvVarArgs(
                                        name="POD_NAME",
                                        value_from=k8s.core.v1.EnvVarSourceArgs(
                                            field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                                                field_path="metadata.name"
                                            )
                                        ),
                                    ),
                                    *(ref.env(password_env(user)) for user, ref in args.users.items()),
                                ],
                                ports=[
                                    k8s.core.v1.ContainerPortArgs(
                                        name="client", container_port=kube.NATS_CLIENT_PORT
                                    ),
                                    k8s.core.v1.ContainerPortArgs(
                                        name="cluster", container_port=kube.NATS_CLUSTER_PORT
                                    ),
                                    k8s.core.v1.ContainerPortArgs(
                                        name="monitor", container_port=kube.NATS_MONITOR_PORT
                                    ),
                                ],
                                startup_probe=k8s.core.v1.ProbeArgs(
                                    http_get=k8s.core.v1.HTTPGetActionArgs(
                                        path="/healthz", port=kube.NATS_MONITOR_PORT
                                    ),
                                    period_seconds=10,
                                    failure_threshold=90,
                                ),
                                readiness_probe=k8s.core.v1.ProbeArgs(
                                    http_get=k8s.core.v1.HTTPGetActionArgs(
                                        path=health, port=kube.NATS_MONITOR_PORT
                                    ),
                                    period_seconds=10,
                                    failure_threshold=3,
                                ),
                                liveness_probe=k8s.core.v1.ProbeArgs(
                                    http_get=k8s.core.v1.HTTPGetActionArgs(
                                        path=health, port=kube.NATS_MONITOR_PORT
                                    ),
                                    period_seconds=30,
                                    failure_threshold=3,
                                ),
                                lifecycle=k8s.core.v1.LifecycleArgs(
                                    pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                                        exec_=k8s.core.v1.ExecActionArgs(
                                            command=["nats-server", "-sl=ldm=/data/nats.pid"]
                                        )
                                    )
                                ),
                                resources=kube.resources(500, 1024),
                                security_context=kube.container_security(kube.NATS_UID),
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data"),
                                    k8s.core.v1.VolumeMountArgs(
                                        name="conf", mount_path=_CONF_DIR, read_only=True
                                    ),
                                    k8s.core.v1.VolumeMountArgs(
                                        name="tls", mount_path=_TLS_DIR, read_only=True
                                    ),
                                ],
                            ),
                            # Exposes JetStream stream depth (the DLQ alarm) to Prometheus.
                            k8s.core.v1.ContainerArgs(
                                name="metrics",
                                image=args.exporter_image,
                                args=[
                                    "-jsz=all",
                                    "-connz",
                                    f"-port={kube.NATS_METRICS_PORT}",
                                    f"http://localhost:{kube.NATS_MONITOR_PORT}",
                                ],
                                ports=[
                                    k8s.core.v1.ContainerPortArgs(
                                        name="metrics", container_port=kube.NATS_METRICS_PORT
                                    )
                                ],
                                readiness_probe=k8s.core.v1.ProbeArgs(
                                    tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=kube.NATS_METRICS_PORT),
                                    period_seconds=10,
                                ),
                                liveness_probe=k8s.core.v1.ProbeArgs(
                                    tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=kube.NATS_METRICS_PORT),
                                    period_seconds=30,
                                    failure_threshold=3,
                                ),
                                resources=kube.resources(50, 64),
                                security_context=kube.container_security(kube.NATS_UID),
                            ),
                        ],
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="conf",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name="nats-config"),
                            ),
                            k8s.core.v1.VolumeArgs(
                                name="tls",
                                secret=k8s.core.v1.SecretVolumeSourceArgs(
                                    secret_name=self.tls_secret, default_mode=0o440
                                ),
                            ),
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
                                requests={"storage": f"{args.storage_gb}Gi"}
                            ),
                        ),
                    )
                ],
            ),
            opts=self.child(protect=args.protect, depends_on=[cert, config, *args.depends_on]),
        )

        # One-shot setup: create (or update to) the task and dead-letter streams. Idempotent:
        # "add" succeeds when the stream matches, "edit" reconciles a changed definition.
        script = "set -eu\n" + "".join(
            f"nats stream add --config {c} {n} || nats stream edit --config {c} --force {n}\n"
            for c, n in (("/etc/streams/tasks.json", STREAM), ("/etc/streams/dlq.json", DLQ_STREAM))
        )
        self.job = k8s.batch.v1.Job(
            kube.STREAMS_JOB,
            metadata=kube.meta(kube.STREAMS_JOB, place, kube.STREAMS_JOB),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=10,
                active_deadline_seconds=900,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    # The definitions' hash: changing a stream changes the template, so the Job reruns.
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        labels=kube.labels(place.labels, kube.STREAMS_JOB),
                        annotations={
                            "skyfleet.io/streams-sha256": hashlib.sha256(
                                json.dumps(stream_files, sort_keys=True).encode()
                            ).hexdigest()
                        },
                    ),
                    spec=k8s.core.v1.PodSpecArgs(
                        restart_policy="OnFailure",
                        automount_service_account_token=False,
                        enable_service_links=False,
                        security_context=kube.pod_security(kube.NATS_UID),
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="streams",
                                image=args.box_image,
                                command=["sh", "-c", script],
                                env=[
                                    k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),
                                    k8s.core.v1.EnvVarArgs(
                                        name="NATS_URL", value=f"tls://{host}:{kube.NATS_CLIENT_PORT}"
                                    ),
                                    k8s.core.v1.EnvVarArgs(name="NATS_CA", value="/etc/nats-ca/ca.crt"),
                                    # The nats CLI reads its credentials from these.
                                    k8s.core.v1.EnvVarArgs(name="NATS_USER", value=STREAMS_USER),
                                    args.users[STREAMS_USER].env("NATS_PASSWORD"),
                                ],
                                resources=kube.resources(100, 64),
                                security_context=kube.container_security(kube.NATS_UID),
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(
                                        name="streams", mount_path="/etc/streams", read_only=True
                                    ),
                                    k8s.core.v1.VolumeMountArgs(
                                        name="ca", mount_path="/etc/nats-ca", read_only=True
                                    ),
                                    k8s.core.v1.VolumeMountArgs(name="scratch", mount_path="/tmp"),
                                ],
                            )
                        ],
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="streams",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name="nats-streams"),
                            ),
                            kube.ca_volume("ca", self.tls_secret),
                            kube.scratch_volume(),
                        ],
                    ),
                ),
            ),
            # A Job's template is immutable: a changed definition replaces the Job.
            opts=self.child(
                depends_on=[self.stateful_set, streams],
                replace_on_changes=["spec"],
                delete_before_replace=True,
            ),
        )

        # At most one NATS node down at a time: a 3-node JetStream cluster keeps quorum.
        kube.pdb("nats", place, kube.NATS, self.child())
        self.register_outputs({"urls": self.urls, "stream": STREAM, "dlqStream": DLQ_STREAM})
