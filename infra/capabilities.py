"""Which resources provide each capability on each site target: the definition of parity.

A capability is met on a target when the plan holds every piece of its ``EVIDENCE``: a resource
of the given type whose logical name matches, that belongs to the given capability component
(``skyfleet:<target>:<Component>``) and, where a path is given, sets that input. The type alone
is not enough: the aws DLQ is an SQS queue like the task queue, Cloud Run's autoscaling is the
service's own ``scaling``, and on-prem the cache and the broker are both StatefulSets.

``skyfleet plan`` prints one line per capability from ``CAPABILITIES`` (the types, derived from
the evidence), and the parity test checks every site target with ``missing_capabilities``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol


@dataclass(frozen=True)
class Evidence:
    """One resource a capability needs on a target."""

    type: str
    name: str  # the resource's logical (Pulumi) name; a glob
    component: str  # the capability component it belongs to (one of COMPONENTS)
    path: tuple[str, ...] = ()  # an input the resource must set (keys into its inputs)


class PlanResource(Protocol):
    """What the matcher reads of a planned resource (``skyfleet.plan.PlannedResource``)."""

    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def urn(self) -> str: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def inputs(self) -> Mapping[str, Any]: ...


def _e(type_: str, name: str, component: str, *path: str) -> Evidence:
    return Evidence(type_, name, component, tuple(path))


_ECS = "aws:ecs/service:Service"
_SQS = "aws:sqs/queue:Queue"
_RUN = "gcp:cloudrunv2/service:Service"
_TOPIC = "gcp:pubsub/topic:Topic"
_SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
_STS = "kubernetes:apps/v1:StatefulSet"
_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
_CONFIG_MAP = "kubernetes:core/v1:ConfigMap"

EVIDENCE: dict[str, dict[str, tuple[Evidence, ...]]] = {
    "service": {
        "aws": (_e(_ECS, "service-api", "Service"), _e(_ECS, "service-worker", "Service")),
        "gcp": (_e(_RUN, "api", "Service"), _e(_RUN, "worker", "Service")),
        "onprem": (_e(_DEPLOYMENT, "api", "Service"), _e(_DEPLOYMENT, "worker", "Service")),
    },
    "load balancer": {
        "aws": (_e("aws:lb/loadBalancer:LoadBalancer", "lb-alb", "LoadBalancer"),),
        "gcp": (_e("gcp:compute/globalForwardingRule:GlobalForwardingRule", "https", "LoadBalancer"),),
        "onprem": (_e("kubernetes:networking.k8s.io/v1:Ingress", "api", "LoadBalancer"),),
    },
    "cache": {
        "aws": (_e("aws:elasticache/replicationGroup:ReplicationGroup", "cache-redis", "Cache"),),
        "gcp": (_e("gcp:redis/instance:Instance", "redis", "Cache"),),
        "onprem": (_e(_STS, "redis", "Cache"),),
    },
    "queue": {
        "aws": (_e(_SQS, "queue-tasks", "Queue"),),
        "gcp": (_e(_TOPIC, "tasks", "Queue"), _e(_SUBSCRIPTION, "tasks-worker", "Queue")),
        "onprem": (_e(_STS, "nats", "Queue"),),
    },
    # The dead-letter queue, and what sends to it: the task queue's redrive, the worker
    # subscription's dead-letter policy, the stream the setup Job creates.
    "dlq": {
        "aws": (_e(_SQS, "queue-dlq", "Queue"), _e(_SQS, "queue-tasks", "Queue", "redrivePolicy")),
        "gcp": (
            _e(_TOPIC, "tasks-dead-letter", "Queue"),
            _e(_SUBSCRIPTION, "tasks-worker", "Queue", "deadLetterPolicy", "deadLetterTopic"),
        ),
        "onprem": (
            _e("kubernetes:batch/v1:Job", "nats-streams", "Queue"),
            _e(_CONFIG_MAP, "nats-streams", "Queue", "data", "dlq.json"),
        ),
    },
    "secrets": {
        "aws": (
            _e("aws:secretsmanager/secret:Secret", "secrets-api-keys", "Secrets"),
            _e("aws:secretsmanager/secret:Secret", "secrets-redis-auth", "Secrets"),
        ),
        "gcp": (
            _e("gcp:secretmanager/secret:Secret", "api-keys", "Secrets"),
            _e("gcp:secretmanager/secret:Secret", "redis-auth", "Secrets"),
        ),
        "onprem": (
            _e("kubernetes:core/v1:Secret", "api-keys", "Secrets"),
            _e("kubernetes:core/v1:Secret", "redis-auth", "Secrets"),
        ),
    },
    # Both processes scale: Cloud Run's autoscaling is each service's own scaling bounds.
    "autoscaling": {
        "aws": (
            _e("aws:appautoscaling/policy:Policy", "service-api-*", "Service"),
            _e("aws:appautoscaling/policy:Policy", "service-worker-*", "Service"),
        ),
        "gcp": (
            _e(_RUN, "api", "Service", "template", "scaling", "maxInstanceCount"),
            _e(_RUN, "worker", "Service", "template", "scaling", "maxInstanceCount"),
        ),
        "onprem": (
            _e("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "api-hpa", "Service"),
            _e("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "worker-hpa", "Service"),
        ),
    },
    "logs": {
        "aws": (
            _e("aws:cloudwatch/logGroup:LogGroup", "service-api-logs", "Service"),
            _e("aws:cloudwatch/logGroup:LogGroup", "service-worker-logs", "Service"),
        ),
        "gcp": (_e("gcp:logging/projectBucketConfig:ProjectBucketConfig", "app-logs", "Service"),),
        "onprem": (_e(_CONFIG_MAP, "log-pipeline", "Service"),),
    },
    "alarms": {
        "aws": (_e("aws:cloudwatch/metricAlarm:MetricAlarm", "alarms-*", "Alarms"),),
        "gcp": (_e("gcp:monitoring/alertPolicy:AlertPolicy", "*", "Alarms"),),
        "onprem": (_e("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "alerts", "Alarms"),),
    },
}

# The resource types of each capability per target (the plan summary's evidence).
CAPABILITIES: dict[str, dict[str, tuple[str, ...]]] = {
    capability: {target: tuple(dict.fromkeys(e.type for e in evidence)) for target, evidence in per.items()}
    for capability, per in EVIDENCE.items()
}

# The component every site target must declare for each capability (skyfleet:<target>:<Name>).
COMPONENTS: tuple[str, ...] = (
    "Network",
    "Secrets",
    "Cache",
    "Queue",
    "Service",
    "LoadBalancer",
    "Alarms",
)


def _dig(inputs: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = inputs
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def matching(evidence: Evidence, target: str, resources: Iterable[PlanResource]) -> list[PlanResource]:
    """The planned resources that are ``evidence`` on ``target``."""
    resources = list(resources)
    types = {r.urn: r.type for r in resources}
    component = f"skyfleet:{target}:{evidence.component}"
    return [
        r
        for r in resources
        if r.type == evidence.type
        and fnmatchcase(r.name, evidence.name)
        and r.parent is not None
        and types.get(r.parent) == component
        and (not evidence.path or _dig(r.inputs, evidence.path) is not None)
    ]


def missing_capabilities(target: str, resources: Iterable[PlanResource]) -> list[str]:
    """The capabilities a plan of ``target`` lacks: those with a piece of evidence it does not hold."""
    resources = list(resources)
    return [
        capability
        for capability, per in EVIDENCE.items()
        if not per.get(target) or not all(matching(e, target, resources) for e in per[target])
    ]
