"""The compliance rules, one module per service. Importing this package never starts the policy
server: only the pack's `__main__.py` constructs the `PolicyPack`."""

from __future__ import annotations

from . import (
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
    gcp_iam,
    gcp_lb,
    gcp_pubsub,
    gcp_redis,
    gcp_run,
    kubernetes,
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
]

__all__ = ["ALL_RULES", "COMMON_SCHEMA", "Controls", "Rule"]
