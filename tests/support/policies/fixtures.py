"""Compliant baseline stacks (one per site kind) and one-property flips that break one rule each,
in the style of pulumi/compliance-policies: every case copies a baseline and changes one thing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skyfleet.plan import PlannedResource
from tests.support.policies import fixtures_aws, fixtures_gcp, fixtures_k8s
from tests.support.policies.kit import (
    DELETE,
    DIGEST,
    K8S_LABELS,
    TAGS,
    C,
    P,
    chain,
    container,
    doc,
    res,
    role_statement,
    setp,
    statement,
)


def aws_site() -> list[PlannedResource]:
    return _aws_site() + fixtures_aws.extra()


def _aws_site() -> list[PlannedResource]:
    container = {
        "name": "api",
        "image": "repo/agent" + DIGEST,
        "privileged": False,
        "readonlyRootFilesystem": True,
        "environment": [{"name": "LOG_LEVEL", "value": "info"}],
        "secrets": [{"name": "API_KEYS", "valueFrom": "arn:aws:secretsmanager:eu-west-1:1:secret:k"}],
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "api"}},
    }
    return [
        res(
            "aws:kms/key:Key",
            "key",
            {
                "enableKeyRotation": True,
                "tags": TAGS,
                "policy": doc(
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ),
            },
        ),
        res(
            "aws:cloudwatch/logGroup:LogGroup",
            "api-logs",
            {"retentionInDays": 30, "kmsKeyId": "arn:key", "tags": TAGS},
        ),
        res(
            "aws:sqs/queue:Queue",
            "tasks-dlq",
            {
                "sqsManagedSseEnabled": True,
                "tags": TAGS,
                "redriveAllowPolicy": json.dumps({"redrivePermission": "allowAll"}),
            },
        ),
        res(
            "aws:sqs/queue:Queue",
            "tasks",
            {
                "sqsManagedSseEnabled": True,
                "tags": TAGS,
                "redrivePolicy": json.dumps(
                    {"deadLetterTargetArn": "arn:fixture:tasks-dlq", "maxReceiveCount": 5}
                ),
            },
        ),
        res(
            "aws:sqs/queuePolicy:QueuePolicy",
            "tasks-policy",
            {
                "queueUrl": "https://sqs/tasks",
                "policy": doc(
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::123456789012:role/api"},
                        "Action": "sqs:SendMessage",
                        "Resource": "arn:fixture:tasks",
                    }
                ),
            },
        ),
        res(
            "aws:ec2/securityGroup:SecurityGroup",
            "alb-sg",
            {
                "tags": TAGS,
                "ingress": [
                    {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]},
                    {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrBlocks": ["0.0.0.0/0"]},
                ],
            },
            id_="sg-alb",
        ),
        res(
            "aws:ec2/securityGroup:SecurityGroup",
            "tasks-sg",
            {
                "tags": TAGS,
                "ingress": [
                    {"protocol": "tcp", "fromPort": 8080, "toPort": 8080, "securityGroups": ["sg-alb"]}
                ],
            },
            id_="sg-tasks",
        ),
        res(
            "aws:ec2/securityGroup:SecurityGroup",
            "cache-sg",
            {
                "tags": TAGS,
                "ingress": [
                    {"protocol": "tcp", "fromPort": 6379, "toPort": 6379, "securityGroups": ["sg-tasks"]}
                ],
            },
            id_="sg-cache",
        ),
        res(
            "aws:elasticache/replicationGroup:ReplicationGroup",
            "cache",
            {
                "engine": "valkey",
                "atRestEncryptionEnabled": True,
                "transitEncryptionEnabled": True,
                "transitEncryptionMode": "required",
                "authToken": "Vq8xN2pL5tR9wK3mZ7bY4cH6jD1fG0sA",
                "automaticFailoverEnabled": True,
                "multiAzEnabled": True,
                "numCacheClusters": 2,
                "snapshotRetentionLimit": 7,
                "subnetGroupName": "cache-subnets",
                "securityGroupIds": ["sg-cache"],
                "port": 6379,
                "finalSnapshotIdentifier": "cache-final",
                "tags": TAGS,
            },
        ),
        res(
            "aws:lb/loadBalancer:LoadBalancer",
            "alb",
            {
                "loadBalancerType": "application",
                "dropInvalidHeaderFields": True,
                "enableDeletionProtection": True,
                "accessLogs": {"enabled": True, "bucket": "logs-bucket"},
                "securityGroups": ["sg-alb"],
                "tags": TAGS,
            },
        ),
        res(
            "aws:lb/listener:Listener",
            "https",
            {
                "loadBalancerArn": "arn:fixture:alb",
                "protocol": "HTTPS",
                "port": 443,
                "tags": TAGS,
                "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                "defaultActions": [{"type": "forward"}],
            },
        ),
        res(
            "aws:lb/listener:Listener",
            "http",
            {
                "loadBalancerArn": "arn:fixture:alb",
                "protocol": "HTTP",
                "port": 80,
                "tags": TAGS,
                "defaultActions": [
                    {
                        "type": "redirect",
                        "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"},
                    }
                ],
            },
        ),
        # A static-address front: an NLB on an Elastic IP passes TCP 443 through to the ALB's HTTPS
        # listener (TLS still ends at the ALB).
        res("aws:ec2/eip:Eip", "nlb-a", {"domain": "vpc", "tags": TAGS}, id_="eipalloc-nlb-a"),
        res(
            "aws:lb/loadBalancer:LoadBalancer",
            "nlb",
            {
                "loadBalancerType": "network",
                "internal": False,
                "subnetMappings": [{"subnetId": "subnet-public-a", "allocationId": "eipalloc-nlb-a"}],
                "enableCrossZoneLoadBalancing": True,
                "enableDeletionProtection": True,
                "tags": TAGS,
            },
        ),
        res(
            "aws:lb/targetGroup:TargetGroup",
            "nlb-alb",
            {
                "targetType": "alb",
                "protocol": "TCP",
                "port": 443,
                "vpcId": "vpc-1",
                "healthCheck": {"enabled": True, "protocol": "HTTPS", "path": "/readyz"},
                "tags": TAGS,
            },
        ),
        res(
            "aws:lb/targetGroupAttachment:TargetGroupAttachment",
            "nlb-alb-attachment",
            {"targetGroupArn": "arn:fixture:nlb-alb", "targetId": "arn:fixture:alb", "port": 443},
        ),
        res(
            "aws:lb/listener:Listener",
            "nlb-tcp",
            {
                "loadBalancerArn": "arn:fixture:nlb",
                "protocol": "TCP",
                "port": 443,
                "tags": TAGS,
                "defaultActions": [{"type": "forward", "targetGroupArn": "arn:fixture:nlb-alb"}],
            },
        ),
        res(
            "aws:ecs/taskDefinition:TaskDefinition",
            "api-task",
            {
                "containerDefinitions": json.dumps([container]),
                "networkMode": "awsvpc",
                "taskRoleArn": "arn:fixture:api-role",
                "executionRoleArn": "arn:fixture:exec-role",
                "volumes": [
                    {
                        "name": "shared",
                        "efsVolumeConfiguration": {"fileSystemId": "fs-1", "transitEncryption": "ENABLED"},
                    }
                ],
                "tags": TAGS,
            },
        ),
        res(
            "aws:ecs/service:Service",
            "api",
            {"networkConfiguration": {"assignPublicIp": False, "subnets": ["subnet-1"]}, "tags": TAGS},
        ),
        res(
            "aws:iam/role:Role",
            "api-role",
            {
                "tags": TAGS,
                "assumeRolePolicy": doc(
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ),
                "inlinePolicies": [
                    {
                        "name": "queue",
                        "policy": doc(
                            {
                                "Effect": "Allow",
                                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                                "Resource": "arn:fixture:tasks",
                            }
                        ),
                    }
                ],
            },
        ),
        res(
            "aws:iam/rolePolicy:RolePolicy",
            "api-secrets",
            {
                "role": "api-role",
                "policy": doc(
                    {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "arn:secret"}
                ),
            },
        ),
        res(
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
            "exec",
            {
                "role": "exec",
                "policyArn": "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
            },
        ),
        res("aws:s3/bucket:Bucket", "logs", {"forceDestroy": False, "tags": TAGS}, id_="logs-bucket"),
        res(
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            "logs-pab",
            {
                "bucket": "logs-bucket",
                "blockPublicAcls": True,
                "blockPublicPolicy": True,
                "ignorePublicAcls": True,
                "restrictPublicBuckets": True,
            },
        ),
        res(
            "aws:s3/bucketPolicy:BucketPolicy",
            "logs-policy",
            {
                "bucket": "logs-bucket",
                "policy": doc(
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": "arn:aws:s3:::logs-bucket/*",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ),
            },
        ),
        res(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "logs-sse",
            {
                "bucket": "logs-bucket",
                "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
            },
        ),
        res(
            "aws:s3/bucketVersioning:BucketVersioning",
            "logs-versioning",
            {"bucket": "logs-bucket", "versioningConfiguration": {"status": "Enabled"}},
        ),
    ]


def gcp_site() -> list[PlannedResource]:
    return _gcp_site() + fixtures_gcp.extra()


def _gcp_site() -> list[PlannedResource]:
    labels = {k.replace("-", "_") if k == "cost-center" else k: v for k, v in TAGS.items()}
    return [
        res(
            "gcp:cloudrunv2/service:Service",
            "api",
            {
                "location": "europe-west1",
                "ingress": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
                "labels": labels,
                "template": {
                    "serviceAccount": "api@skyfleet-prod.iam.gserviceaccount.com",
                    "containers": [
                        {
                            "image": "europe-west1-docker.pkg.dev/p/r/agent" + DIGEST,
                            "envs": [{"name": "LOG_LEVEL", "value": "info"}],
                        }
                    ],
                },
            },
            id_="api-svc",
        ),
        res(
            "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
            "api-public",
            {
                "name": "api-svc",
                "location": "europe-west1",
                "role": "roles/run.invoker",
                "member": "allUsers",
            },
        ),
        res(
            "gcp:redis/instance:Instance",
            "cache",
            {
                "region": "europe-west1",
                "authEnabled": True,
                "transitEncryptionMode": "SERVER_AUTHENTICATION",
                "tier": "STANDARD_HA",
                "connectMode": "PRIVATE_SERVICE_ACCESS",
                "authorizedNetwork": "vpc-id",
                "labels": labels,
                "deletionProtection": True,
            },
        ),
        res("gcp:pubsub/topic:Topic", "tasks", {"labels": labels}),
        res("gcp:pubsub/topic:Topic", "tasks-dead-letter", {"labels": labels}),
        res(
            "gcp:pubsub/subscription:Subscription",
            "tasks-sub",
            {
                "topic": "tasks-id",
                "labels": labels,
                "deadLetterPolicy": {"deadLetterTopic": "tasks-dead-letter-id", "maxDeliveryAttempts": 5},
            },
        ),
        res(
            "gcp:pubsub/subscription:Subscription",
            "tasks-dead-letter-sub",
            {"topic": "tasks-dead-letter-id", "labels": labels},
        ),
        res(
            "gcp:pubsub/topicIAMMember:TopicIAMMember",
            "dlq-publisher",
            {
                "topic": "tasks-dead-letter-id",
                "role": "roles/pubsub.publisher",
                "member": "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com",
            },
        ),
        res(
            "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
            "dlq-forwarder",
            {
                "subscription": "tasks-sub-id",
                "role": "roles/pubsub.subscriber",
                "member": "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com",
            },
        ),
        res(
            "gcp:projects/iAMMember:IAMMember",
            "api-trace",
            {
                "project": "skyfleet-prod",
                "role": "roles/cloudtrace.agent",
                "member": "serviceAccount:api@skyfleet-prod.iam.gserviceaccount.com",
            },
        ),
        res("gcp:compute/sSLPolicy:SSLPolicy", "tls12", {"minTlsVersion": "TLS_1_2", "profile": "MODERN"}),
        res(
            "gcp:compute/targetHttpsProxy:TargetHttpsProxy",
            "https-proxy",
            {"sslPolicy": "tls12-id", "urlMap": "map-id"},
        ),
        res(
            "gcp:compute/backendService:BackendService",
            "backend",
            {"logConfig": {"enable": True, "sampleRate": 1}},
        ),
        res("gcp:compute/globalForwardingRule:GlobalForwardingRule", "https-rule", {"labels": labels}),
        res(
            "gcp:compute/securityPolicy:SecurityPolicy",
            "armor",
            {
                "rules": [
                    {
                        "priority": 1000,
                        "action": "deny(403)",
                        "description": "OWASP CRS sqli-v33-stable, sensitivity 1",
                        # Operators inside string literals are no subexpressions: five here.
                        "match": {
                            "expr": {
                                "expression": "evaluatePreconfiguredWaf('sqli-v33-stable') && "
                                "!request.path.matches('^/v1/(a|b)$') && "
                                "!request.headers['x-a'].contains('&&||&&||') && "
                                "origin.region_code != 'AQ' || request.method == 'OPTIONS'"
                            }
                        },
                    },
                    {
                        "priority": 2147483647,
                        "action": "allow",
                        "description": "default: allow what no rule above denied",
                        "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}},
                    },
                ]
            },
        ),
        # A policy whose rules are resources of their own: the policy's own description is no
        # rule's (the API takes longer ones there).
        res(
            "gcp:compute/securityPolicy:SecurityPolicy",
            "armor-rules-apart",
            {"description": "Skyfleet: a policy whose rules are SecurityPolicyRule resources of their own"},
        ),
        res(
            "gcp:compute/securityPolicyRule:SecurityPolicyRule",
            "armor-rule",
            {
                "securityPolicy": "armor-rules-apart-id",
                "priority": 1000,
                "action": "deny(403)",
                "description": "no clients from AQ",
                "match": {"expr": {"expression": "origin.region_code == 'AQ'"}},
            },
        ),
    ]


def _pod(app: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": app,
                    "image": image,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                    "env": [
                        {
                            "name": "REDIS_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "redis", "key": "pw"}},
                        }
                    ],
                    "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080}},
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                }
            ],
        },
    }


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": "agents", "labels": K8S_LABELS}


def k8s_site() -> list[PlannedResource]:
    return _k8s_site() + fixtures_k8s.extra()


def _api_pod() -> dict[str, Any]:
    """The api's pod: its token stays unmounted through its ServiceAccount, not the pod spec."""
    pod = _pod("api", "agent" + DIGEST)
    del pod["spec"]["automountServiceAccountToken"]
    pod["spec"]["serviceAccountName"] = "api"
    return pod


def _k8s_site() -> list[PlannedResource]:
    return [
        res("kubernetes:core/v1:Namespace", "agents", {"metadata": {"name": "agents", "labels": K8S_LABELS}}),
        res(
            "kubernetes:apps/v1:Deployment",
            "api",
            {
                "metadata": _meta("api"),
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "api"}},
                    "template": _api_pod(),
                },
            },
        ),
        res(
            "kubernetes:apps/v1:StatefulSet",
            "redis",
            {
                "metadata": _meta("redis"),
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "redis"}},
                    "template": _pod("redis", "redis:7.2.4" + DIGEST),
                },
            },
        ),
        res(
            "kubernetes:apps/v1:StatefulSet",
            "nats",
            {
                "metadata": _meta("nats"),
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "nats"}},
                    "template": _pod("nats", "nats:2.10.7"),
                },
            },
        ),
        res(
            "kubernetes:core/v1:ConfigMap",
            "tasks-dlq-stream",
            {"metadata": _meta("tasks-dlq"), "data": {"subject": "tasks.dlq"}},
        ),
        res(
            "kubernetes:core/v1:Service", "api-svc", {"metadata": _meta("api"), "spec": {"type": "ClusterIP"}}
        ),
        res(
            "kubernetes:networking.k8s.io/v1:Ingress",
            "api-ingress",
            {
                "metadata": _meta("api"),
                "spec": {
                    "tls": [{"hosts": ["agents.example.com"], "secretName": "tls"}],
                    "rules": [{"host": "agents.example.com"}],
                },
            },
        ),
        res(
            "kubernetes:networking.k8s.io/v1:NetworkPolicy",
            "default-deny",
            {
                "metadata": _meta("default-deny"),
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            },
        ),
        res(
            "kubernetes:networking.k8s.io/v1:NetworkPolicy",
            "redis-from-api",
            {
                "metadata": _meta("redis-from-api"),
                "spec": {
                    "podSelector": {"matchLabels": {"app": "redis"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                            "ports": [{"port": 6379}],
                        }
                    ],
                },
            },
        ),
        res(
            "kubernetes:policy/v1:PodDisruptionBudget",
            "api-pdb",
            {
                "metadata": _meta("api"),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "api"}}},
            },
        ),
        res(
            "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
            "api-hpa",
            {
                "metadata": _meta("api"),
                "spec": {
                    "scaleTargetRef": {"kind": "Deployment", "name": "api"},
                    "minReplicas": 2,
                    "maxReplicas": 6,
                },
            },
        ),
    ]


Site = Callable[[], list[PlannedResource]]


def skyfleet_program(site: Site, target: str) -> Site:
    """The site as a Skyfleet program: its resources under a Skyfleet component, as
    infra/<target> registers them (the Skyfleet rule group applies only to such programs)."""

    def build() -> list[PlannedResource]:
        component = f"skyfleet:{target}:Service"
        parent = PlannedResource(
            type=component,
            name="service",
            urn=f"urn:pulumi:fixture::fixture::{component}::service",
            parent=None,
            provider=None,
            inputs={},
            outputs={},
            dependencies=[],
            custom=False,
        )
        out = [parent]
        for r in site():
            r.urn = f"urn:pulumi:fixture::fixture::{component}${r.type}::{r.name}"
            r.parent = parent.urn
            out.append(r)
        return out

    return build


BASELINES: dict[str, Callable[[], list[PlannedResource]]] = {
    "aws": skyfleet_program(aws_site, "aws"),
    "gcp": skyfleet_program(gcp_site, "gcp"),
    "k8s": skyfleet_program(k8s_site, "onprem"),
}


@dataclass(frozen=True)
class Case:
    """Break `rule` by changing one thing on resource `name` of the `site` baseline."""

    rule: str
    site: str
    name: str
    flip: Callable[[dict[str, Any]], None]
    label: str

    def resources(self) -> list[PlannedResource]:
        out = []
        for r in BASELINES[self.site]():
            if r.name == self.name:
                r = copy.deepcopy(r)
                self.flip(r.inputs)
                r.outputs = {**r.outputs, **r.inputs}
                for key in list(r.outputs):
                    if key not in r.inputs and key not in ("id", "arn"):
                        del r.outputs[key]
            out.append(r)
        return out


@dataclass(frozen=True)
class AddedCase(Case):
    """Break `rule` by adding ``count`` copies of resource `name` of the `site` baseline (a
    stack rule that counts resources)."""

    count: int = 1

    def resources(self) -> list[PlannedResource]:
        out = BASELINES[self.site]()
        model = next(r for r in out if r.name == self.name)
        for i in range(self.count):
            extra = copy.deepcopy(model)
            extra.name = f"{model.name}-{i}"
            extra.urn = f"{model.urn}-{i}"
            self.flip(extra.inputs)
            out.append(extra)
        return out


CASES: list[Case] = [
    Case(
        "aws-elasticache-encrypted-at-rest",
        "aws",
        "cache",
        setp("atRestEncryptionEnabled", False),
        "at rest off",
    ),
    Case(
        "aws-elasticache-encrypted-in-transit",
        "aws",
        "cache",
        setp("transitEncryptionEnabled", False),
        "tls off",
    ),
    Case("aws-elasticache-auth", "aws", "cache", setp("authToken", DELETE), "no auth token"),
    Case(
        "aws-elasticache-automatic-failover",
        "aws",
        "cache",
        setp("automaticFailoverEnabled", False),
        "no failover",
    ),
    Case("aws-elasticache-backups", "aws", "cache", setp("snapshotRetentionLimit", 0), "no snapshots"),
    Case(
        "aws-elasticache-no-default-subnet-group",
        "aws",
        "cache",
        setp("subnetGroupName", "default"),
        "default",
    ),
    Case("aws-sqs-encrypted", "aws", "tasks", setp("sqsManagedSseEnabled", False), "sse off"),
    Case("aws-sqs-dead-letter-queue", "aws", "tasks", setp("redrivePolicy", DELETE), "no redrive"),
    Case(
        "aws-sqs-no-public-policy", "aws", "tasks-policy", statement("policy", Principal="*"), "principal *"
    ),
    Case(
        "aws-ecs-not-privileged",
        "aws",
        "api-task",
        container(lambda c: c.update(privileged=True)),
        "privileged",
    ),
    Case(
        "aws-ecs-readonly-root-filesystem",
        "aws",
        "api-task",
        container(lambda c: c.update(readonlyRootFilesystem=False)),
        "rw root",
    ),
    Case(
        "aws-ecs-no-plaintext-secrets",
        "aws",
        "api-task",
        container(lambda c: c["environment"].append({"name": "DB_PASSWORD", "value": "hunter2"})),
        "env secret",
    ),
    Case("aws-ecs-logging", "aws", "api-task", container(lambda c: c.pop("logConfiguration")), "no logs"),
    Case(
        "aws-ecs-no-public-ip", "aws", "api", setp("networkConfiguration.assignPublicIp", True), "public ip"
    ),
    Case("aws-alb-https-only", "aws", "http", setp("defaultActions", [{"type": "forward"}]), "http forward"),
    Case("aws-alb-tls12-policy", "aws", "https", setp("sslPolicy", "ELBSecurityPolicy-2016-08"), "tls1.0"),
    Case("aws-nlb-tcp-passthrough-to-https", "aws", "nlb-alb", setp("targetType", "ip"), "ip targets"),
    Case("aws-nlb-tcp-passthrough-to-https", "aws", "nlb-alb", setp("port", 8443), "no https on port"),
    Case("aws-alb-drop-invalid-headers", "aws", "alb", setp("dropInvalidHeaderFields", False), "headers"),
    Case("aws-alb-access-logs", "aws", "alb", setp("accessLogs.enabled", False), "no access logs"),
    Case(
        "aws-alb-deletion-protection", "aws", "alb", setp("enableDeletionProtection", False), "no protection"
    ),
    Case("aws-iam-no-wildcard-actions", "aws", "api-role", role_statement(Action="*"), "action *"),
    Case(
        "aws-iam-no-privilege-escalation",
        "aws",
        "api-secrets",
        statement("policy", Action="iam:PassRole", Resource="*"),
        "passrole *",
    ),
    Case(
        "aws-iam-no-admin-attachment",
        "aws",
        "exec",
        setp("policyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
        "admin",
    ),
    Case("aws-s3-public-access-block", "aws", "logs-pab", setp("restrictPublicBuckets", False), "pab off"),
    Case("aws-s3-tls-only-policy", "aws", "logs-policy", statement("policy", Condition={}), "no tls deny"),
    Case(
        "aws-s3-encryption",
        "aws",
        "logs-sse",
        setp("rules.0.applyServerSideEncryptionByDefault.sseAlgorithm", "none"),
        "bad algorithm",
    ),
    Case(
        "aws-s3-versioning",
        "aws",
        "logs-versioning",
        setp("versioningConfiguration.status", "Suspended"),
        "off",
    ),
    Case(
        "aws-s3-bucket-public-access-blocked",
        "aws",
        "logs-pab",
        setp("bucket", "other-bucket"),
        "pab elsewhere",
    ),
    Case("aws-s3-bucket-tls-only", "aws", "logs-policy", setp("bucket", "other-bucket"), "policy elsewhere"),
    Case("aws-s3-bucket-encrypted", "aws", "logs-sse", setp("bucket", "other-bucket"), "sse elsewhere"),
    Case(
        "aws-s3-bucket-versioned",
        "aws",
        "logs-versioning",
        setp("bucket", "other-bucket"),
        "versioning elsewhere",
    ),
    Case("aws-logs-retention", "aws", "api-logs", setp("retentionInDays", 7), "7 days in prod"),
    Case("aws-logs-kms", "aws", "api-logs", setp("kmsKeyId", DELETE), "no kms"),
    Case("aws-kms-key-rotation", "aws", "key", setp("enableKeyRotation", False), "no rotation"),
    Case("aws-kms-no-public-principal", "aws", "key", statement("policy", Principal="*"), "principal *"),
    Case("aws-network-alb-only-public-ingress", "aws", "alb-sg", setp("ingress.0.fromPort", 22), "ssh open"),
    Case(
        "aws-network-cache-ingress-from-service",
        "aws",
        "cache-sg",
        setp("ingress.0.cidrBlocks", ["10.0.0.0/8"]),
        "cidr ingress",
    ),
    Case("aws-required-tags", "aws", "tasks", setp("tags", {"owner": "platform"}), "tags missing"),
    Case("allowed-regions", "gcp", "cache", setp("region", "asia-east1"), "asia"),
    Case("stateful-deletion-protection", "gcp", "cache", setp("deletionProtection", False), "memorystore"),
    Case(
        "stateful-deletion-protection",
        "aws",
        "cache",
        setp("finalSnapshotIdentifier", DELETE),
        "no final snap",
    ),
    Case("site-parity", "aws", "tasks", setp("redrivePolicy", DELETE), "queue without dlq"),
    Case("gcp-run-ingress-restricted", "gcp", "api", setp("ingress", "INGRESS_TRAFFIC_ALL"), "all ingress"),
    Case(
        "gcp-run-dedicated-service-account",
        "gcp",
        "api",
        setp("template.serviceAccount", "1-compute@developer.gserviceaccount.com"),
        "default sa",
    ),
    Case("gcp-run-public-invoker-behind-lb", "gcp", "api", setp("ingress", "INGRESS_TRAFFIC_ALL"), "public"),
    Case("gcp-redis-auth", "gcp", "cache", setp("authEnabled", False), "no auth"),
    Case("gcp-redis-tls", "gcp", "cache", setp("transitEncryptionMode", "DISABLED"), "no tls"),
    Case("gcp-redis-ha", "gcp", "cache", setp("tier", "BASIC"), "basic"),
    Case("gcp-redis-private-access", "gcp", "cache", setp("connectMode", "DIRECT_PEERING"), "peering"),
    Case("gcp-pubsub-dead-letter", "gcp", "tasks-sub", setp("deadLetterPolicy", DELETE), "no dlq"),
    Case("gcp-pubsub-not-public", "gcp", "dlq-publisher", setp("member", "allUsers"), "public"),
    Case("gcp-iam-no-basic-roles", "gcp", "api-trace", setp("role", "roles/editor"), "editor"),
    Case(
        "gcp-iam-no-project-sa-impersonation",
        "gcp",
        "api-trace",
        setp("role", "roles/iam.serviceAccountTokenCreator"),
        "token creator",
    ),
    Case("gcp-ssl-policy-min-tls12", "gcp", "tls12", setp("minTlsVersion", "TLS_1_0"), "tls1.0"),
    Case("gcp-ssl-policy-no-weak-profile", "gcp", "tls12", setp("profile", "COMPATIBLE"), "compatible"),
    Case("gcp-https-proxy-ssl-policy", "gcp", "https-proxy", setp("sslPolicy", DELETE), "no ssl policy"),
    Case("gcp-lb-logging", "gcp", "backend", setp("logConfig.enable", False), "no logging"),
    Case(
        "gcp-cloud-armor-rules-accepted",
        "gcp",
        "armor",
        setp("rules.0.description", "OWASP CRS sqli-v33-stable, sensitivity 1, free-text routes excepted"),
        "67-character description",
    ),
    Case(
        "gcp-cloud-armor-rules-accepted",
        "gcp",
        "armor",
        setp(
            "rules.0.match.expr.expression",
            "evaluatePreconfiguredWaf('sqli-v33-stable') && a && b && c && d && e",
        ),
        "six subexpressions",
    ),
    Case("gcp-cloud-armor-rules-accepted", "gcp", "armor", setp("rules.1.priority", 1000), "one priority"),
    Case(
        "gcp-cloud-armor-rules-accepted",
        "gcp",
        "armor-rule",
        chain(setp("securityPolicy", "armor-id"), setp("priority", 1000.0)),
        "a rule resource with an inline rule's priority",
    ),
    Case(
        "gcp-cloud-armor-rules-accepted",
        "gcp",
        "armor-rule",
        setp("description", "no clients from AQ, where no user of the agent app is known to work"),
        "a rule resource's long description",
    ),
    Case("gcp-required-labels", "gcp", "tasks", setp("labels", {}), "no labels"),
    Case("k8s-no-privileged", "k8s", "api", setp(f"{C}.securityContext.privileged", True), "privileged"),
    Case(
        "k8s-no-privilege-escalation",
        "k8s",
        "api",
        setp(f"{C}.securityContext.allowPrivilegeEscalation", True),
        "escalation",
    ),
    Case("k8s-run-as-non-root", "k8s", "api", setp(f"{C}.securityContext.runAsUser", 0), "uid 0"),
    Case(
        "k8s-drop-all-capabilities",
        "k8s",
        "api",
        setp(f"{C}.securityContext.capabilities.drop", []),
        "no drop",
    ),
    Case(
        "k8s-seccomp-runtime-default",
        "k8s",
        "api",
        setp(f"{P}.securityContext.seccompProfile.type", "Unconfined"),
        "unconfined",
    ),
    Case(
        "k8s-readonly-root-filesystem",
        "k8s",
        "api",
        setp(f"{C}.securityContext.readOnlyRootFilesystem", False),
        "rw",
    ),
    Case("k8s-no-host-namespaces", "k8s", "api", setp(f"{P}.hostNetwork", True), "host network"),
    Case("k8s-resource-limits", "k8s", "api", setp(f"{C}.resources.limits", {"cpu": "1"}), "no memory limit"),
    Case("k8s-image-pinned", "k8s", "api", setp(f"{C}.image", "agent:latest"), "latest"),
    Case(
        "k8s-no-service-account-token",
        "k8s",
        "redis",
        setp(f"{P}.automountServiceAccountToken", True),
        "token",
    ),
    Case(
        "k8s-no-literal-secrets-in-env",
        "k8s",
        "api",
        setp(f"{C}.env.0", {"name": "REDIS_PASSWORD", "value": "x"}),
        "literal",
    ),
    Case("k8s-no-default-namespace", "k8s", "api-svc", setp("metadata.namespace", "default"), "default ns"),
    Case("k8s-probes", "k8s", "api", setp(f"{C}.readinessProbe", DELETE), "no readiness"),
    Case("k8s-pdb-allows-disruption", "k8s", "api-pdb", setp("spec.maxUnavailable", 0), "max 0"),
    Case("k8s-namespace-network-policy", "k8s", "agents", setp("metadata.name", "agents-2"), "new namespace"),
    Case(
        "k8s-cache-ingress-from-service",
        "k8s",
        "redis-from-api",
        setp("spec.ingress.0.from.0", {"ipBlock": {"cidr": "0.0.0.0/0"}}),
        "ipblock",
    ),
    Case("k8s-prod-replicas", "k8s", "api-hpa", setp("spec.minReplicas", 1), "hpa min 1"),
    Case("k8s-required-labels", "k8s", "api", setp("metadata.labels", {"app": "api"}), "labels"),
]
# A stack rule that counts resources: broken by adding them.
CASES.append(AddedCase("aws-eip-within-default-quota", "aws", "nlb-a", lambda _: None, "6 eips", count=5))
CASES += [Case(rule, "aws", name, flip, label) for rule, name, flip, label in fixtures_aws.CASES]
CASES += [Case(rule, "gcp", name, flip, label) for rule, name, flip, label in fixtures_gcp.CASES]
CASES += [Case(rule, "k8s", name, flip, label) for rule, name, flip, label in fixtures_k8s.CASES]
