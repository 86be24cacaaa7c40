"""The app's processes on the cluster: Deployments ``api`` and ``worker`` from the same image,
each with its own token-less ServiceAccount, restricted pods spread over zones, an HPA and a
PDB; a ClusterIP Service for the api; and the log pipeline config the node log agent loads.

Both processes serve /healthz, /readyz and /metrics on the contract's port (the worker only
for probes and scraping: no Service routes traffic to it), so both get the same probes;
readiness gates rollouts (maxUnavailable 0) and, for the api, traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import pulumi
import pulumi_kubernetes as k8s

from agent_app import contract
from agent_app.contract import Env
from infra.component import Capability
from infra.onprem import kube
from infra.spec import OnpremStack
from infra.workload import API_KEYS, Workload

# Where each CA certificate (from the data stores' cert-manager Secrets) is mounted.
REDIS_CA_DIR = "/etc/skyfleet/tls/redis"
QUEUE_CA_DIR = "/etc/skyfleet/tls/nats"
REDIS_CA_FILE = f"{REDIS_CA_DIR}/ca.crt"
QUEUE_CA_FILE = f"{QUEUE_CA_DIR}/ca.crt"
# How long a stopping api pod serves on before its drain: Kubernetes removes its endpoint as it
# sends SIGTERM, and the ingress controller routes to it until it has seen that.
ENDPOINT_PROPAGATION_SECONDS = 5


@dataclass(frozen=True)
class ServiceArgs:
    place: kube.Placement
    image: str
    api: Workload
    worker: Workload
    secrets: Mapping[str, kube.SecretRef]  # logical secret name -> Secret key
    redis_tls_secret: str
    queue_tls_secret: str
    cpu_target_percent: int
    topology_key: str
    log_forward: str
    strict_hosts: bool = False
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


def _env(w: Workload, secrets: Mapping[str, kube.SecretRef]) -> list[k8s.core.v1.EnvVarArgs]:
    """Plain settings as values, secrets only as secretKeyRef (never in the pod spec)."""
    plain = [
        # Workload env values are str or Output[str] (the cache and queue URLs).
        k8s.core.v1.EnvVarArgs(name=k, value=cast("pulumi.Input[str]", v))
        for k, v in w.env.items()
    ]
    instance = k8s.core.v1.EnvVarArgs(
        name=Env.INSTANCE.value,
        value_from=k8s.core.v1.EnvVarSourceArgs(
            field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="metadata.name")
        ),
    )
    return [*plain, instance, *(secrets[logical].env(var) for var, logical in w.secret_env.items())]


def _http_probe(path: str, *, period: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=contract.DEFAULT_PORT),
        period_seconds=period,
        timeout_seconds=3,
        failure_threshold=failures,
    )


def _log_pipeline(namespace: str, forward: str) -> str:
    """fluent-bit: tail this namespace's container logs (JSON lines), add pod metadata and
    forward them over TLS to the cluster's aggregator, which owns retention."""
    host, _, port = forward.rpartition(":")
    return f"""[INPUT]
    Name              tail
    Path              /var/log/containers/*_{namespace}_*.log
    Tag               skyfleet.{namespace}.*
    multiline.parser  cri
    Mem_Buf_Limit     50MB
    Skip_Long_Lines   On

[FILTER]
    Name       kubernetes
    Match      skyfleet.{namespace}.*
    Merge_Log  On
    Keep_Log   Off
    Labels     On

[OUTPUT]
    Name        forward
    Match       skyfleet.{namespace}.*
    Host        {host}
    Port        {port}
    tls         On
    tls.verify  On
"""


class Service(Capability):
    """api and worker Deployments + ServiceAccounts + api Service + HPAs + PDBs + logs."""

    TARGET = "onprem"

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        place = args.place
        self.deployments: dict[str, k8s.apps.v1.Deployment] = {}
        for w in (args.api, args.worker):
            self.deployments[w.role] = self._workload(w, args)

        # Stable in-cluster address of the api, the Ingress backend.
        self.service = k8s.core.v1.Service(
            kube.API,
            metadata=kube.meta(kube.API, place, kube.API),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=kube.selector(kube.API),
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="http", port=contract.DEFAULT_PORT, target_port="http", protocol="TCP"
                    )
                ],
            ),
            opts=self.child(),
        )

        # Logs: the pipeline config the cluster's fluent-bit DaemonSet picks up by label.
        self.logs = k8s.core.v1.ConfigMap(
            "log-pipeline",
            metadata=kube.meta(
                "log-pipeline",
                place,
                annotations={"skyfleet.io/log-format": "json"},
            ),
            data={"fluent-bit.conf": _log_pipeline(place.namespace, args.log_forward)},
            opts=self.child(),
        )
        self.register_outputs(
            {
                "apiDeployment": kube.API,
                "workerDeployment": kube.WORKER,
                "apiService": kube.API,
            }
        )

    def _workload(self, w: Workload, args: ServiceArgs) -> k8s.apps.v1.Deployment:
        place = args.place
        # Its own identity with no API token: the app never talks to the Kubernetes API.
        k8s.core.v1.ServiceAccount(
            f"{w.role}-sa",
            metadata=kube.meta(w.role, place, w.role),
            automount_service_account_token=False,
            opts=self.child(),
        )
        mounts = [
            k8s.core.v1.VolumeMountArgs(name="scratch", mount_path=contract.SCRATCH_DIR),
            k8s.core.v1.VolumeMountArgs(name="redis-ca", mount_path=REDIS_CA_DIR, read_only=True),
            k8s.core.v1.VolumeMountArgs(name="queue-ca", mount_path=QUEUE_CA_DIR, read_only=True),
        ]
        volumes = [
            kube.scratch_volume(),
            kube.ca_volume("redis-ca", args.redis_tls_secret),
            kube.ca_volume("queue-ca", args.queue_tls_secret),
        ]
        if Env.API_KEYS_FILE.value in w.env:
            # Only a process that serves clients reads their keys (see infra.workload).
            api_keys = args.secrets[API_KEYS]
            mounts.append(
                k8s.core.v1.VolumeMountArgs(
                    name="api-keys", mount_path=contract.API_KEYS_MOUNT_DIR, read_only=True
                )
            )
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name="api-keys",
                    secret=k8s.core.v1.SecretVolumeSourceArgs(
                        secret_name=api_keys.name,
                        items=[k8s.core.v1.KeyToPathArgs(key=api_keys.key, path=contract.API_KEYS_FILE_NAME)],
                        default_mode=0o440,
                    ),
                )
            )
        # The api serves on while the ingress controller learns that a stopping pod left its
        # Service (the endpoint goes as SIGTERM comes): SIGTERM's drain refuses new work.
        pre_stop = ENDPOINT_PROPAGATION_SECONDS if w.public else 0
        container = k8s.core.v1.ContainerArgs(
            name=w.role,
            image=args.image,
            image_pull_policy="IfNotPresent",
            command=list(w.command),
            env=_env(w, args.secrets),
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=w.port)],
            resources=kube.resources(w.cpu, w.memory),
            security_context=kube.container_security(contract.RUN_AS_UID),
            volume_mounts=mounts,
            startup_probe=_http_probe(contract.LIVENESS_PATH, period=5, failures=24),
            liveness_probe=_http_probe(contract.LIVENESS_PATH, period=10, failures=3),
            readiness_probe=_http_probe(contract.READINESS_PATH, period=5, failures=2),
            lifecycle=k8s.core.v1.LifecycleArgs(
                pre_stop=k8s.core.v1.LifecycleHandlerArgs(sleep=k8s.core.v1.SleepActionArgs(seconds=pre_stop))
            )
            if pre_stop
            else None,
        )
        # The process: restricted pod, spread over zones and hosts, replicas owned by the HPA.
        deployment = k8s.apps.v1.Deployment(
            w.role,
            metadata=kube.meta(w.role, place, w.role),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=w.min_replicas,
                revision_history_limit=5,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=kube.selector(w.role)),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=kube.labels(place.labels, w.role)),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=w.role,
                        automount_service_account_token=False,
                        enable_service_links=False,
                        security_context=kube.pod_security(contract.RUN_AS_UID),
                        topology_spread_constraints=kube.spread(
                            w.role,
                            args.topology_key,
                            strict_hosts=args.strict_hosts,
                            revision_label="pod-template-hash",
                        ),
                        # The kubelet's grace runs from the preStop hook: the app's starts after it.
                        termination_grace_period_seconds=OnpremStack.stop_grace_seconds + pre_stop,
                        containers=[container],
                        volumes=volumes,
                    ),
                ),
            ),
            # The HPA owns the replica count after creation.
            opts=self.child(ignore_changes=["spec.replicas"], depends_on=list(args.depends_on)),
        )

        # Scale on CPU between the spec's bounds; scale in slowly to ride out bursts.
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{w.role}-hpa",
            metadata=kube.meta(w.role, place, w.role),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=w.role
                ),
                min_replicas=max(1, w.min_replicas),
                max_replicas=w.max_replicas,
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(
                                type="Utilization", average_utilization=args.cpu_target_percent
                            ),
                        ),
                    )
                ],
                behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                    scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(stabilization_window_seconds=300)
                ),
            ),
            opts=self.child(depends_on=[deployment]),
        )
        # Evictions one pod at a time; with >= 2 replicas (prod) the role never reaches zero.
        kube.pdb(w.role, place, w.role, self.child())
        return deployment
