"""CloudWatch log groups: bounded retention and customer-managed encryption."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject

LOG_GROUP = ("aws:cloudwatch/logGroup:LogGroup",)


def _retention(s: Subject) -> Iterator[str]:
    days = s.props.get("retentionInDays")
    minimum = int(s.config.get("minRetentionDays", 30) if s.prod else 1)
    if not isinstance(days, int | float) or days <= 0:
        yield "retentionInDays is not set: logs are kept forever (cost) or not governed"
    elif days < minimum:
        yield f"retentionInDays is {days:g}; prod keeps logs at least {minimum} days"


def _kms(s: Subject) -> Iterator[str]:
    if not s.props.get("kmsKeyId"):
        yield "kmsKeyId is not set; encrypt the log group with a customer managed KMS key"


RULES = [
    Rule(
        "aws-logs-retention",
        "CloudWatch log groups have a retention period (>= 30 days in prod).",
        Severity.LOW,
        Controls(nist=("AU-11",), soc2=("CC7.2",), pci=("10.5.1",)),
        "Set retention_in_days (e.g. 30 in dev, 365 in prod).",
        LOG_GROUP,
        _retention,
        config={"minRetentionDays": {"type": "integer", "minimum": 1, "default": 30}},
    ),
    Rule(
        "aws-logs-kms",
        "CloudWatch log groups are encrypted with a KMS key.",
        Severity.MEDIUM,
        Controls(nist=("SC-28", "AU-9"), soc2=("CC6.1",), pci=("10.3.2",)),
        "Create an aws.kms.Key (rotation on, policy granting logs.<region>.amazonaws.com) and pass its ARN "
        "as kms_key_id.",
        LOG_GROUP,
        _kms,
    ),
]
