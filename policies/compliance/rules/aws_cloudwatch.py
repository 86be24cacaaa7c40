"""Audit and logs: CloudWatch log groups (bounded retention, customer-managed encryption with a
key CloudWatch Logs may use) and CloudTrail trails (on, every region, validated, encrypted)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator

from pulumi_policy import Severity

from ._plan import condition_admits, key_grants, kms_key, text
from ._rule import Controls, Rule, StackView, Subject, is_false, truthy

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


# What CloudWatch Logs does with a log group's key ("Encrypt log data in CloudWatch Logs using
# AWS KMS": the key policy allows logs.<region>.amazonaws.com kms:Encrypt*, Decrypt*, ReEncrypt*,
# GenerateDataKey* and Describe*). Without them CreateLogGroup (or AssociateKmsKey) is refused.
LOGS = "logs.*.amazonaws.com"
LOGS_KMS_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:GenerateDataKey",
    "kms:DescribeKey",
)
# The encryption context CloudWatch Logs passes: the log group's ARN.
LOGS_CONTEXT = "kms:EncryptionContext:aws:logs:arn"


def _names_group(group: str) -> Callable[[str, bool], bool]:
    """Whether an ``arn:aws:logs:<region>:<account>:log-group:<name>`` condition value admits the
    group (region and account are not in the plan's view of the group: any is taken)."""
    resource = f"log-group:{group}"

    def matches(value: str, wildcards: bool) -> bool:
        parts = value.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn" or parts[2] not in ("logs", "*"):
            return wildcards and value == "*"
        return fnmatch.fnmatchcase(resource, parts[5]) if wildcards else resource == parts[5]

    return matches


def _log_key_usable(view: StackView) -> Iterator[tuple[str, str | None]]:
    for group in view.of_type(*LOG_GROUP):
        name, key_ref = text(group.props.get("name")), text(group.props.get("kmsKeyId"))
        key = kms_key(view, key_ref) if key_ref else None
        if key is None or not name:
            continue  # no key, one from outside the stack, or a generated name: not judged here
        names = _names_group(name)
        missing = [
            a
            for a in LOGS_KMS_ACTIONS
            if not any(condition_admits(g, LOGS_CONTEXT, names) for g in key_grants(key, LOGS, a) or [])
        ]
        if missing:
            yield (
                "is encrypted with a key whose policy does not let CloudWatch Logs "
                f"(logs.<region>.amazonaws.com) {', '.join(missing)} for log group {name!r} "
                "(its kms:EncryptionContext:aws:logs:arn): "
                "creating the group fails",
                group.urn,
            )


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
        "aws-log-group-key-usable",
        "CloudWatch log groups encrypted with a key of the stack can use it: the key policy lets CloudWatch "
        "Logs encrypt, decrypt, re-encrypt, generate data keys and describe the key for that group.",
        Severity.HIGH,
        Controls(nist=("AU-9", "SC-28"), soc2=("CC7.2",), pci=("10.3.2",)),
        "Add a key policy statement: Principal Service logs.<region>.amazonaws.com, Action kms:Encrypt*, "
        "kms:Decrypt*, kms:ReEncrypt*, kms:GenerateDataKey*, kms:Describe*, with an ArnEquals/ArnLike "
        "condition on kms:EncryptionContext:aws:logs:arn naming every log group that uses the key.",
        stack_check=_log_key_usable,
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
