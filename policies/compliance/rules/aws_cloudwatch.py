"""Audit and logs: CloudWatch log groups (bounded retention, customer-managed encryption) and
CloudTrail trails (on, every region, validated, encrypted)."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, is_false, truthy

LOG_GROUP = ("aws:cloudwatch/logGroup:LogGroup",)
TRAIL = ("aws:cloudtrail/trail:Trail",)


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


def _trail(s: Subject) -> Iterator[str]:
    p = s.props
    if is_false(p.get("enableLogging")):
        yield "enableLogging is false: the trail records nothing"
    if not truthy(p.get("enableLogFileValidation")):
        yield "enableLogFileValidation must be true (tampering with delivered logs goes unnoticed)"
    if not truthy(p.get("isMultiRegionTrail")):
        yield "isMultiRegionTrail must be true (activity in other regions is not recorded)"
    if not p.get("kmsKeyId"):
        yield "kmsKeyId is not set: log files are encrypted with S3-managed keys only"


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
        checkov=("CKV_AWS_66", "CKV_AWS_338"),
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
        checkov=("CKV_AWS_158",),
    ),
    Rule(
        "aws-cloudtrail-integrity",
        "CloudTrail trails log in every region, validate log files and encrypt them with KMS.",
        Severity.MEDIUM,
        Controls(
            cis=("AWS-3.1", "AWS-3.2", "AWS-3.5"),
            nist=("AU-2", "AU-9", "AU-12"),
            soc2=("CC7.2",),
            pci=("10.2.1", "10.3.2"),
        ),
        "Set is_multi_region_trail=True, enable_log_file_validation=True and kms_key_id on the trail.",
        TRAIL,
        _trail,
        checkov=("CKV_AWS_36", "CKV_AWS_67", "CKV_AWS_35", "CKV_AWS_251"),
    ),
]
