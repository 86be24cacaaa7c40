"""The compliance rules, one module per service. Importing this package never starts the policy
server: only the pack's `__main__.py` constructs the `PolicyPack`."""

from __future__ import annotations

from . import (
    alarm_delivery,
    aws_alb,
    aws_cloudwatch,
    aws_ecs,
    aws_elasticache,
    aws_iam,
    aws_kms,
    aws_network,
    aws_s3,
    aws_sqs,
    cross_cutting,
    deploy_order,
    ecs_scratch,
    gcp_iam,
    gcp_lb,
    gcp_pubsub,
    gcp_redis,
    gcp_run,
    kubernetes,
    skyfleet_app,
    skyfleet_names,
    skyfleet_permissions,
    tls_names,
)
from ._rule import COMMON_SCHEMA, Controls, Rule

ALL_RULES: list[Rule] = [
    *aws_elasticache.RULES,
    *aws_sqs.RULES,
    *aws_ecs.RULES,
    *aws_alb.RULES,
    *aws_iam.RULES,
    *aws_s3.RULES,
    *aws_cloudwatch.RULES,
    *aws_kms.RULES,
    *aws_network.RULES,
    *gcp_run.RULES,
    *gcp_redis.RULES,
    *gcp_pubsub.RULES,
    *gcp_iam.RULES,
    *gcp_lb.RULES,
    *kubernetes.RULES,
    *cross_cutting.RULES,
    # Deployability: would the planned stack run?
    *skyfleet_app.RULES,
    *skyfleet_permissions.RULES,
    *deploy_order.RULES,
    *skyfleet_names.RULES,
    *tls_names.RULES,
    *alarm_delivery.RULES,
    *ecs_scratch.RULES,
]

__all__ = ["ALL_RULES", "COMMON_SCHEMA", "Controls", "Rule"]
