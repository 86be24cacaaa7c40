"""Service: the app's two processes on ECS Fargate, from one image with different commands
(``infra.workload``). Tasks run in the private subnets without public IPs, as a non-root user
on a read-only root filesystem, get secrets only from Secrets Manager, log to KMS-encrypted
CloudWatch log groups, and scale with Application Auto Scaling: the api on CPU and requests per
target, the worker on queue backlog per running task.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from agent_app import contract
from agent_app.queues import permissions as perm
from infra.aws.site import AwsSite, policy_json, service_assume_policy
from infra.component import Capability
from infra.spec import Autoscaling, AwsStack
from infra.workload import Workload

# ECR image references: <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag][@digest]
_ECR_RE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9._/-]+?)(?::[A-Za-z0-9_.-]+)?(?:@sha256:[a-f0-9]{64})?$"
)
SCRATCH_VOLUME = "scratch"
# Fargate creates a task's bind-mount volume owned by root (mode 0755): the app's non-root user
# could not write its scratch dir. This container runs first, opens the directory up the way
# /tmp is (sticky, world-writable), and exits; the app's containers wait for its success.
SCRATCH_INIT = "scratch-permissions"
SCRATCH_MODE = 0o1777


def queue_actions(role: str, resource: str = "queue") -> list[str]:
    """The SQS actions a process role calls on its queue, or its dead-letter queue ("dlq")
    (agent_app.queues.permissions), and nothing else: the api sends, the worker receives,
    acknowledges, extends and sends back a copy of what it hands back on shutdown, and sends to
    the DLQ what it dead-letters."""
    return sorted({n.permission for n in perm.needs(perm.SQS, role) if n.resource == resource})


SCALE_OUT_COOLDOWN = 60
SCALE_IN_COOLDOWN = 300


def ecr_repository_arn(image: str, partition: str) -> str | None:
    """The ECR repository an image comes from (None for other registries)."""
    m = _ECR_RE.match(image)
    if not m:
        return None
    return f"arn:{partition}:ecr:{m['region']}:{m['account']}:repository/{m['repo']}"


@dataclass(frozen=True)
class ServiceArgs:
    site: AwsSite
    image: str
    workloads: Sequence[Workload]
    autoscaling: Autoscaling
    log_retention_days: int
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    # Logical secret name -> Secrets Manager ARN, and the version holding its value.
    secret_arns: Mapping[str, pulumi.Input[str]]
    secret_versions: Mapping[str, pulumi.Resource]
    queue_arn: pulumi.Input[str]
    queue_name: pulumi.Input[str]
    dlq_arn: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    # app/<alb>/<id>/targetgroup/<tg>/<id>: the ALBRequestCountPerTarget resource label.
    request_count_label: pulumi.Input[str]
    # The HTTPS listener: the target group must be attached before a service registers in it.
    listener: pulumi.Resource


class Service(Capability):
    TARGET = "aws"

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site = args.site
        roles = [w.role for w in args.workloads]

        # The cluster, with Container Insights (the worker's scaling metric needs its task counts).
        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=site.prefix,
            settings=[{"name": "containerInsights", "value": "enabled"}],
            tags=site.tagged("cluster"),
            opts=self.child(),
        )
        self.log_groups: dict[str, aws.cloudwatch.LogGroup] = {}
        for role in roles:
            # Role's log group: retention from the spec, encrypted with the site key.
            self.log_groups[role] = aws.cloudwatch.LogGroup(
                f"{name}-{role}-logs",
                name=site.log_group_name(role),
                retention_in_days=args.log_retention_days,
                kms_key_id=args.kms_key_arn,
                tags=site.tagged(f"{role}-logs"),
                opts=self.child(),
            )

        execution_role = self._execution_role(name, args)
        self.execution_role = execution_role
        self.task_roles: dict[str, aws.iam.Role] = {}
        self.task_policies: dict[str, aws.iam.RolePolicy] = {}
        for workload in args.workloads:
            role = workload.role
            # Role's task role: what that process itself may do in AWS, which is its calls on
            # this queue (and its DLQ) and nothing more.
            self.task_roles[role] = aws.iam.Role(
                f"{name}-{role}-task",
                description=f"Skyfleet {site.name}: {role} tasks (its calls on this site's queue only)",
                assume_role_policy=service_assume_policy("ecs-tasks.amazonaws.com", site.account),
                tags=site.tagged(f"{role}-task"),
                opts=self.child(),
            )
            statements: list[dict[str, object]] = [
                {
                    "Sid": "ThisQueue",
                    "Effect": "Allow",
                    "Action": queue_actions(role),
                    "Resource": args.queue_arn,
                }
            ]
            if queue_actions(role, "dlq"):
                # The worker sends what it dead-letters to the DLQ itself, with the reason.
                statements.append(
                    {
                        "Sid": "ItsDeadLetterQueue",
                        "Effect": "Allow",
                        "Action": queue_actions(role, "dlq"),
                        "Resource": args.dlq_arn,
                    }
                )
            self.task_policies[role] = aws.iam.RolePolicy(
                f"{name}-{role}-task-queue",
                role=self.task_roles[role].id,
                policy=policy_json(statements),
                opts=self.child(),
            )

        self.services: dict[str, aws.ecs.Service] = {}
        self.scaling_targets: dict[str, aws.appautoscaling.Target] = {}
        for workload in args.workloads:
            self._deploy(name, args, workload, execution_role, self.task_roles[workload.role])
        self._autoscale(name, args)

        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "serviceNames": {r: s.name for r, s in self.services.items()},
                "logGroups": {r: g.name for r, g in self.log_groups.items()},
            }
        )

    def _execution_role(self, name: str, args: ServiceArgs) -> aws.iam.Role:
        """The role ECS uses to start tasks: pull the image, write logs, read these secrets."""
        site = args.site
        # Execution role: assumed by ECS on this account's behalf only.
        role = aws.iam.Role(
            f"{name}-execution",
            description=f"Skyfleet {site.name}: ECS task execution (image, logs, secrets)",
            assume_role_policy=service_assume_policy("ecs-tasks.amazonaws.com", site.account),
            tags=site.tagged("execution"),
            opts=self.child(),
        )
        used = sorted({s for w in args.workloads for s in w.secret_env.values()})
        statements: list[dict[str, Any]] = [
            {
                "Sid": "WriteOwnLogStreams",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                # Log streams are addressed as <log group ARN>:log-stream:<name>.
                "Resource": [f"{site.log_group_arn(r)}:log-stream:*" for r in sorted(self.log_groups)],
            },
            {
                "Sid": "ReadTheseSecrets",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": [args.secret_arns[s] for s in used],
            },
            {
                "Sid": "DecryptSecretsThroughSecretsManager",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": args.kms_key_arn,
                "Condition": {
                    "StringEquals": {"kms:ViaService": f"secretsmanager.{site.region}.amazonaws.com"}
                },
            },
        ]
        repo = ecr_repository_arn(args.image, site.partition)
        if repo:
            statements += [
                {
                    "Sid": "EcrLogin",
                    "Effect": "Allow",
                    "Action": "ecr:GetAuthorizationToken",
                    # GetAuthorizationToken has no resource-level permissions: AWS requires "*".
                    "Resource": "*",
                },
                {
                    "Sid": "PullTheAppImage",
                    "Effect": "Allow",
                    "Action": [
                        "ecr:BatchCheckLayerAvailability",
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                    ],
                    "Resource": repo,
                },
            ]
        self.execution_policy = aws.iam.RolePolicy(
            f"{name}-execution", role=role.id, policy=policy_json(statements), opts=self.child()
        )
        return role

    def _logs(self, args: ServiceArgs, workload: Workload) -> dict[str, Any]:
        site = args.site
        return {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": site.log_group_name(workload.role),
                "awslogs-region": site.region,
                "awslogs-stream-prefix": workload.role,
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        }

    def _scratch_init(self, args: ServiceArgs, workload: Workload) -> dict[str, Any]:
        """Makes the scratch volume writable for the app's user, then exits (see SCRATCH_INIT).

        Root only for one chmod of a directory root owns, which needs no capability: every
        capability is dropped and the root filesystem stays read-only."""
        return {
            "name": SCRATCH_INIT,
            "image": args.image,
            "essential": False,
            "user": "0:0",
            "command": ["python", "-c", f"import os; os.chmod({contract.SCRATCH_DIR!r}, {SCRATCH_MODE:#o})"],
            "readonlyRootFilesystem": True,
            "mountPoints": [
                {"sourceVolume": SCRATCH_VOLUME, "containerPath": contract.SCRATCH_DIR, "readOnly": False}
            ],
            "linuxParameters": {"capabilities": {"drop": ["ALL"]}},
            "logConfiguration": self._logs(args, workload),
        }

    def _container(self, args: ServiceArgs, workload: Workload) -> dict[str, Any]:
        """The container definition: hardened, secrets by reference, logs to CloudWatch."""
        container: dict[str, Any] = {
            "name": workload.role,
            "image": args.image,
            "essential": True,
            "command": list(workload.command),
            "user": f"{contract.RUN_AS_UID}:{contract.RUN_AS_GID}",
            "readonlyRootFilesystem": True,
            # "privileged" is left unset: Fargate refuses the parameter, and unset means false.
            "environment": [{"name": k, "value": v} for k, v in sorted(workload.env.items())],
            "secrets": [
                {"name": var, "valueFrom": args.secret_arns[logical]}
                for var, logical in sorted(workload.secret_env.items())
            ],
            "mountPoints": [
                {"sourceVolume": SCRATCH_VOLUME, "containerPath": contract.SCRATCH_DIR, "readOnly": False}
            ],
            "dependsOn": [{"containerName": SCRATCH_INIT, "condition": "SUCCESS"}],
            "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
            "stopTimeout": AwsStack.stop_grace_seconds,
            "logConfiguration": self._logs(args, workload),
        }
        # Both processes serve their probes and metrics on the contract's port.
        container["portMappings"] = [{"containerPort": workload.port, "protocol": "tcp", "name": "http"}]
        probe = f"http://127.0.0.1:{workload.port}{contract.LIVENESS_PATH}"
        container["healthCheck"] = {
            "command": [
                "CMD",
                "python",
                "-c",
                f"import urllib.request; urllib.request.urlopen({probe!r}, timeout=3)",
            ],
            "interval": 15,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 20,
        }
        return container

    def _deploy(
        self,
        name: str,
        args: ServiceArgs,
        workload: Workload,
        execution_role: aws.iam.Role,
        task_role: aws.iam.Role,
    ) -> None:
        site, role = args.site, workload.role
        # Role's task definition: Fargate, awsvpc, a writable scratch volume on a read-only root.
        task_definition = aws.ecs.TaskDefinition(
            f"{name}-{role}",
            family=f"{site.prefix}-{role}",
            cpu=str(workload.cpu),
            memory=str(workload.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            volumes=[{"name": SCRATCH_VOLUME}],
            container_definitions=pulumi.Output.json_dumps(
                [self._scratch_init(args, workload), self._container(args, workload)]
            ),
            tags=site.tagged(role),
            opts=self.child(depends_on=[self.log_groups[role]]),
        )
        lb: dict[str, Any] = {}
        if workload.public:
            lb = {
                "load_balancers": [
                    {
                        "target_group_arn": args.target_group_arn,
                        "container_name": role,
                        "container_port": workload.port,
                    }
                ],
                "health_check_grace_period_seconds": 30,
            }
        # Role's service: private subnets, no public IP, rolled back automatically if a deploy
        # never gets healthy. Autoscaling owns the task count after creation.
        self.services[role] = aws.ecs.Service(
            f"{name}-{role}",
            name=role,
            cluster=self.cluster.arn,
            task_definition=task_definition.arn,
            desired_count=workload.min_replicas,
            launch_type="FARGATE",
            platform_version="LATEST",
            network_configuration={
                "subnets": list(args.subnet_ids),
                "security_groups": [args.security_group_id],
                "assign_public_ip": False,
            },
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            availability_zone_rebalancing="ENABLED",
            enable_execute_command=False,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            tags=site.tagged(role),
            # Its tasks start only once their grants and secret values exist: on an update that
            # adds a secret, a task started first would fail and the deploy roll back.
            opts=self.child(
                depends_on=[
                    args.listener,
                    self.execution_policy,
                    self.task_policies[role],
                    *(args.secret_versions[s] for s in sorted(set(workload.secret_env.values()))),
                ],
                ignore_changes=["desiredCount"],
            ),
            **lb,
        )
        # Role's scaling range: min..max tasks from the spec.
        self.scaling_targets[role] = aws.appautoscaling.Target(
            f"{name}-{role}-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", self.cluster.name, "/", self.services[role].name),
            min_capacity=workload.min_replicas,
            max_capacity=workload.max_replicas,
            tags=site.tagged(f"{role}-scaling"),
            opts=self.child(),
        )

    def _autoscale(self, name: str, args: ServiceArgs) -> None:
        scaling = args.autoscaling
        for workload in args.workloads:
            target = self.scaling_targets[workload.role]
            common: dict[str, Any] = {
                "policy_type": "TargetTrackingScaling",
                "resource_id": target.resource_id,
                "scalable_dimension": target.scalable_dimension,
                "service_namespace": target.service_namespace,
                "opts": self.child(),
            }
            if workload.public:
                # api: keep average CPU near the target.
                aws.appautoscaling.Policy(
                    f"{name}-{workload.role}-cpu",
                    target_tracking_scaling_policy_configuration={
                        "target_value": scaling.cpu_target_percent,
                        "predefined_metric_specification": {
                            "predefined_metric_type": "ECSServiceAverageCPUUtilization"
                        },
                        "scale_in_cooldown": SCALE_IN_COOLDOWN,
                        "scale_out_cooldown": SCALE_OUT_COOLDOWN,
                    },
                    **common,
                )
                # api: keep ALB requests per task near the target.
                aws.appautoscaling.Policy(
                    f"{name}-{workload.role}-requests",
                    target_tracking_scaling_policy_configuration={
                        "target_value": scaling.requests_per_target,
                        "predefined_metric_specification": {
                            "predefined_metric_type": "ALBRequestCountPerTarget",
                            "resource_label": args.request_count_label,
                        },
                        "scale_in_cooldown": SCALE_IN_COOLDOWN,
                        "scale_out_cooldown": SCALE_OUT_COOLDOWN,
                    },
                    **common,
                )
            else:
                # worker: keep the backlog (visible messages per running task) near the target.
                aws.appautoscaling.Policy(
                    f"{name}-{workload.role}-backlog",
                    target_tracking_scaling_policy_configuration={
                        "target_value": scaling.queue_messages_per_worker,
                        "customized_metric_specification": {
                            "metrics": [
                                {
                                    "id": "visible",
                                    "label": "messages visible",
                                    "return_data": False,
                                    "metric_stat": {
                                        "stat": "Sum",
                                        "metric": {
                                            "namespace": "AWS/SQS",
                                            "metric_name": "ApproximateNumberOfMessagesVisible",
                                            "dimensions": [{"name": "QueueName", "value": args.queue_name}],
                                        },
                                    },
                                },
                                {
                                    "id": "tasks",
                                    "label": "running worker tasks",
                                    "return_data": False,
                                    "metric_stat": {
                                        "stat": "Average",
                                        "metric": {
                                            "namespace": "ECS/ContainerInsights",
                                            "metric_name": "RunningTaskCount",
                                            "dimensions": [
                                                {"name": "ClusterName", "value": self.cluster.name},
                                                {
                                                    "name": "ServiceName",
                                                    "value": self.services[workload.role].name,
                                                },
                                            ],
                                        },
                                    },
                                },
                                {
                                    "id": "backlog",
                                    "label": "backlog per task",
                                    "expression": "visible / tasks",
                                    "return_data": True,
                                },
                            ]
                        },
                        "scale_in_cooldown": SCALE_IN_COOLDOWN,
                        "scale_out_cooldown": SCALE_OUT_COOLDOWN,
                    },
                    **common,
                )
