"""Which resources provide each capability on each site target: the definition of parity.

``skyfleet plan`` prints one line per capability from it, and the parity test checks every
site target against it. A capability is met when the plan holds at least one resource of any
listed type.
"""

from __future__ import annotations

CAPABILITIES: dict[str, dict[str, tuple[str, ...]]] = {
    "service": {
        "aws": ("aws:ecs/service:Service",),
        "gcp": ("gcp:cloudrunv2/service:Service",),
        "onprem": ("kubernetes:apps/v1:Deployment",),
    },
    "load balancer": {
        "aws": ("aws:lb/loadBalancer:LoadBalancer",),
        "gcp": ("gcp:compute/globalForwardingRule:GlobalForwardingRule",),
        "onprem": ("kubernetes:networking.k8s.io/v1:Ingress",),
    },
    "cache": {
        "aws": ("aws:elasticache/replicationGroup:ReplicationGroup",),
        "gcp": ("gcp:redis/instance:Instance",),
        "onprem": ("kubernetes:apps/v1:StatefulSet",),
    },
    "queue": {
        "aws": ("aws:sqs/queue:Queue",),
        "gcp": ("gcp:pubsub/subscription:Subscription",),
        "onprem": ("kubernetes:apps/v1:StatefulSet",),
    },
    "dlq": {
        "aws": ("aws:sqs/queue:Queue",),
        "gcp": ("gcp:pubsub/topic:Topic",),
        "onprem": ("kubernetes:batch/v1:Job",),
    },
    "secrets": {
        "aws": ("aws:secretsmanager/secret:Secret",),
        "gcp": ("gcp:secretmanager/secret:Secret",),
        "onprem": ("kubernetes:core/v1:Secret",),
    },
    "autoscaling": {
        "aws": ("aws:appautoscaling/policy:Policy",),
        "gcp": ("gcp:cloudrunv2/service:Service",),
        "onprem": ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler",),
    },
    "logs": {
        "aws": ("aws:cloudwatch/logGroup:LogGroup",),
        "gcp": ("gcp:logging/projectBucketConfig:ProjectBucketConfig",),
        "onprem": ("kubernetes:core/v1:ConfigMap",),
    },
    "alarms": {
        "aws": ("aws:cloudwatch/metricAlarm:MetricAlarm",),
        "gcp": ("gcp:monitoring/alertPolicy:AlertPolicy",),
        "onprem": ("kubernetes:monitoring.coreos.com/v1:PrometheusRule",),
    },
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
