"""Cloud Run v2: the api and worker processes from one image, each with its own service
account holding only the grants it uses, Direct VPC egress to reach Memorystore, secrets
from Secret Manager, and a log bucket with the site's retention.

Exposure: the api accepts only traffic from Google's load balancers (and the VPC); the worker
accepts none from outside the VPC. Neither has a public URL reachable from the internet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from agent_app import contract
from agent_app.contract import Env
from infra.gcp.site import GcpCapability, Site
from infra.workload import API_KEYS, Workload

run = gcp.cloudrunv2

# The Redis server CA (Memorystore's serverCaCerts), kept as a secret and mounted as a file.
REDIS_CA = "redis-ca"
REDIS_CA_MOUNT_DIR = "/var/run/secrets/skyfleet-redis-ca"
REDIS_CA_FILE_NAME = "ca.pem"
REDIS_CA_FILE = f"{REDIS_CA_MOUNT_DIR}/{REDIS_CA_FILE_NAME}"

# Load-balancer (and VPC) traffic only for the api; VPC traffic only for the worker.
API_INGRESS = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
WORKER_INGRESS = "INGRESS_TRAFFIC_INTERNAL_ONLY"
# Cloud Run's highest CPU utilization target.
MAX_CPU_TARGET_PERCENT = 90
# Requests one api instance takes at once before Cloud Run scales out.
API_CONCURRENCY = 80
# Cloud Run's allowed whole-vCPU sizes, the CPUs a memory limit needs at least, and the memory
# a CPU size needs at least (MiB).
_CPU_SIZES = (1, 2, 4, 6, 8)
_MIN_CPU_FOR_MEMORY = ((24 * 1024, 8), (16 * 1024, 6), (8 * 1024, 4), (4 * 1024, 2))
MIN_MEMORY_FOR_CPU = {4: 2048, 6: 4096, 8: 4096}
# The spec's CPU units per vCPU (Fargate's).
CPU_UNITS_PER_VCPU = 1024
# Secret files are read-only. Cloud Run mounts them owned by root and the image runs as a
# non-root user (contract.RUN_AS_UID), so they must be world-readable inside the instance.
_SECRET_FILE_MODE = 0o444


def cpu_target(percent: int) -> float:
    """The spec's CPU target as Cloud Run's utilization threshold (it accepts 0.1..0.9)."""
    return min(max(percent, 10), MAX_CPU_TARGET_PERCENT) / 100


def cloud_run_limits(cpu_units: int, memory_mib: int) -> dict[str, str]:
    """Cloud Run limits for a spec's cpu/memory: whole vCPUs (fractional CPU rules out
    concurrency and always-on CPU) and at least the CPUs Cloud Run requires for the memory.
    ``gcp.check`` refuses a memory below what the CPUs need."""
    need = max(1, math.ceil(cpu_units / CPU_UNITS_PER_VCPU))
    for mem, cpus in _MIN_CPU_FOR_MEMORY:
        if memory_mib > mem:
            need = max(need, cpus)
            break
    cpu = next(c for c in _CPU_SIZES if c >= need) if need <= _CPU_SIZES[-1] else _CPU_SIZES[-1]
    return {"cpu": str(cpu), "memory": f"{max(512, memory_mib)}Mi"}


@dataclass(frozen=True)
class FileSecret:
    """A secret mounted as a file: which secret, and where the process reads it."""

    logical: str
    mount_dir: str
    file_name: str


@dataclass(frozen=True)
class ServiceArgs:
    site: Site
    image: str
    workloads: Sequence[Workload]
    secrets: Mapping[str, gcp.secretmanager.Secret]
    secret_versions: Mapping[str, gcp.secretmanager.SecretVersion]
    network: pulumi.Input[str]
    subnet: pulumi.Input[str]
    topic: gcp.pubsub.Topic
    subscription: gcp.pubsub.Subscription
    dead_letter_topic: gcp.pubsub.Topic
    log_retention_days: int
    cpu_target_percent: int


class Service(GcpCapability):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        self.args = args
        self.services: dict[str, run.Service] = {}
        self.accounts: dict[str, gcp.serviceaccount.Account] = {}
        for workload in args.workloads:
            self._deploy(workload)
        self._logs()
        self.api = self.services["api"]
        self.register_outputs(
            {
                **{f"{role}Service": svc.name for role, svc in self.services.items()},
                **{f"{role}ServiceAccount": sa.email for role, sa in self.accounts.items()},
            }
        )

    # --- one Cloud Run service per workload ----------------------------------------------------

    def _deploy(self, w: Workload) -> None:
        site, args = self.args.site, self.args
        role = w.role

        # A dedicated identity per process: nothing granted at project level.
        sa = gcp.serviceaccount.Account(
            f"{role}-sa",
            account_id=site.resource_name(role, 30),
            project=site.project,
            display_name=f"Skyfleet {site.name} {role}",
            description=f"Runs the {role} Cloud Run service of site {site.name}",
            opts=self.child(),
        )
        member = pulumi.Output.concat("serviceAccount:", sa.email)
        self.accounts[role] = sa

        env = dict(w.env)
        files: list[FileSecret] = [FileSecret(REDIS_CA, REDIS_CA_MOUNT_DIR, REDIS_CA_FILE_NAME)]
        if Env.API_KEYS_FILE.value in env:
            files.append(FileSecret(API_KEYS, contract.API_KEYS_MOUNT_DIR, contract.API_KEYS_FILE_NAME))

        # Read access to exactly the secrets this process mounts or injects.
        used = sorted({f.logical for f in files} | set(w.secret_env.values()))
        accessors = [
            gcp.secretmanager.SecretIamMember(
                f"{role}-{logical}-accessor",
                project=site.project,
                secret_id=args.secrets[logical].id,
                role="roles/secretmanager.secretAccessor",
                member=member,
                opts=self.child(),
            )
            for logical in used
        ]
        queue_grants = self._queue_grants(role, member)

        containers = [self._container(w, env, files)]
        volumes = [
            run.ServiceTemplateVolumeArgs(
                name=f.logical,
                secret=run.ServiceTemplateVolumeSecretArgs(
                    secret=args.secrets[f.logical].secret_id,
                    default_mode=_SECRET_FILE_MODE,
                    items=[
                        run.ServiceTemplateVolumeSecretItemArgs(
                            path=f.file_name,
                            version=args.secret_versions[f.logical].version,
                            mode=_SECRET_FILE_MODE,
                        )
                    ],
                ),
            )
            for f in files
        ]

        # The api takes only load-balancer (and VPC) traffic; the worker only VPC traffic. Egress to
        # private ranges (Memorystore) goes through the VPC subnet; the rest leaves directly. The
        # api's invoker check is off: the load balancer's serverless NEG presents no identity, and
        # the ingress setting is what keeps everyone else off its *.run.app URL (clients
        # authenticate to the app with API keys). This needs no allUsers grant, which Domain
        # Restricted Sharing would refuse.
        svc = run.Service(
            role,
            name=site.resource_name(role, 49),
            project=site.project,
            location=site.region,
            description=f"Skyfleet {site.name} {role}",
            ingress=API_INGRESS if w.public else WORKER_INGRESS,
            invoker_iam_disabled=w.public,
            deletion_protection=site.deletion_protection,
            labels={**site.labels, "role": role},
            template=run.ServiceTemplateArgs(
                service_account=sa.email,
                labels={**site.labels, "role": role},
                execution_environment="EXECUTION_ENVIRONMENT_GEN2",
                max_instance_request_concurrency=API_CONCURRENCY if w.public else None,
                # Cloud Run autoscales between the spec's bounds on CPU (the spec's target) and, for
                # the api, on request concurrency; the worker gets no requests, so CPU alone.
                scaling=run.ServiceTemplateScalingArgs(
                    min_instance_count=w.min_replicas,
                    max_instance_count=w.max_replicas,
                    cpu_utilization=cpu_target(args.cpu_target_percent),
                    concurrency_utilization=None if w.public else 0.0,
                ),
                vpc_access=run.ServiceTemplateVpcAccessArgs(
                    network_interfaces=[
                        run.ServiceTemplateVpcAccessNetworkInterfaceArgs(
                            network=args.network, subnetwork=args.subnet, tags=[site.resource_name(role)]
                        )
                    ],
                    egress="PRIVATE_RANGES_ONLY",
                ),
                containers=containers,
                volumes=volumes,
            ),
            opts=self.child(depends_on=[*accessors, *queue_grants]),
        )
        self.services[role] = svc

    def _queue_grants(self, role: str, member: pulumi.Output[str]) -> list[pulumi.Resource]:
        """The api publishes to the task topic; the worker consumes the task subscription and
        publishes to the task topic (what it hands back on shutdown) and to the dead-letter topic.
        Viewer on the same resource lets each check reachability for /readyz."""
        site, args = self.args.site, self.args
        grants: list[pulumi.Resource] = []
        if role == "api":
            for grant in ("publisher", "viewer"):
                grants.append(
                    gcp.pubsub.TopicIAMMember(
                        f"api-topic-{grant}",
                        project=site.project,
                        topic=args.topic.name,
                        role=f"roles/pubsub.{grant}",
                        member=member,
                        opts=self.child(),
                    )
                )
        else:
            for grant in ("subscriber", "viewer"):
                grants.append(
                    gcp.pubsub.SubscriptionIAMMember(
                        f"{role}-subscription-{grant}",
                        project=site.project,
                        subscription=args.subscription.name,
                        role=f"roles/pubsub.{grant}",
                        member=member,
                        opts=self.child(),
                    )
                )
            # It publishes a copy of what it hands back on shutdown to the task topic, and what
            # it dead-letters to the dead-letter topic.
            for grant, topic in (("topic", args.topic), ("dead-letter", args.dead_letter_topic)):
                grants.append(
                    gcp.pubsub.TopicIAMMember(
                        f"{role}-{grant}-publisher",
                        project=site.project,
                        topic=topic.name,
                        role="roles/pubsub.publisher",
                        member=member,
                        opts=self.child(),
                    )
                )
        return grants

    def _container(
        self, w: Workload, env: Mapping[str, object], files: Sequence[FileSecret]
    ) -> run.ServiceTemplateContainerArgs:
        args = self.args
        envs = [run.ServiceTemplateContainerEnvArgs(name=k, value=_input(v)) for k, v in env.items()]
        envs += [
            run.ServiceTemplateContainerEnvArgs(
                name=var,
                value_source=run.ServiceTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=run.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=args.secrets[logical].secret_id,
                        version=args.secret_versions[logical].version,
                    )
                ),
            )
            for var, logical in sorted(w.secret_env.items())
        ]
        return run.ServiceTemplateContainerArgs(
            name=w.role,
            image=args.image,
            commands=list(w.command),
            envs=envs,
            ports=_port(w),
            resources=run.ServiceTemplateContainerResourcesArgs(
                limits=cloud_run_limits(w.cpu, w.memory),
                # CPU only during requests, unless the process works between them (the worker's
                # pulls; a fleet api's takeovers and copies), which Cloud Run would starve.
                cpu_idle=not w.works_between_requests,
                startup_cpu_boost=True,
            ),
            # Traffic only once Redis and the queue answer; restart a wedged process.
            startup_probe=run.ServiceTemplateContainerStartupProbeArgs(
                http_get=run.ServiceTemplateContainerStartupProbeHttpGetArgs(
                    path=contract.READINESS_PATH, port=w.port
                ),
                period_seconds=5,
                timeout_seconds=3,
                failure_threshold=24,
            ),
            liveness_probe=run.ServiceTemplateContainerLivenessProbeArgs(
                http_get=run.ServiceTemplateContainerLivenessProbeHttpGetArgs(
                    path=contract.LIVENESS_PATH, port=w.port
                ),
                period_seconds=10,
                timeout_seconds=3,
                failure_threshold=3,
            ),
            volume_mounts=[
                run.ServiceTemplateContainerVolumeMountArgs(name=f.logical, mount_path=f.mount_dir)
                for f in files
            ],
        )

    # --- logs ------------------------------------------------------------------------------------

    def _logs(self) -> None:
        site = self.args.site
        # A regional log bucket with the site's retention, instead of changing the project's
        # _Default bucket that other workloads share.
        self.log_bucket = gcp.logging.ProjectBucketConfig(
            "app-logs",
            project=site.project,
            location=site.region,
            bucket_id=site.resource_name("app-logs", 100),
            retention_days=self.args.log_retention_days,
            description=f"Skyfleet {site.name}: api and worker logs",
            opts=self.child(),
        )
        names = pulumi.Output.all(*(svc.name for svc in self.services.values())).apply(
            lambda ns: " OR ".join(f'"{n}"' for n in ns)
        )
        # Routes the two services' logs (stdout JSON, requests) into that bucket.
        self.log_sink = gcp.logging.ProjectSink(
            "app-logs",
            name=site.resource_name("app-logs", 100),
            project=site.project,
            destination=pulumi.Output.concat(
                "logging.googleapis.com/projects/",
                site.project,
                "/locations/",
                site.region,
                "/buckets/",
                self.log_bucket.bucket_id,
            ),
            filter=pulumi.Output.concat(
                'resource.type="cloud_run_revision" AND resource.labels.service_name=(', names, ")"
            ),
            unique_writer_identity=True,
            opts=self.child(),
        )


def _input(value: object) -> pulumi.Input[str]:
    """Workload env values are strings or Outputs of strings (from other components)."""
    if isinstance(value, pulumi.Output):
        return value.apply(str)
    return str(value)


def _port(w: Workload) -> run.ServiceTemplateContainerPortsArgs:
    return run.ServiceTemplateContainerPortsArgs(name="http1", container_port=w.port)
