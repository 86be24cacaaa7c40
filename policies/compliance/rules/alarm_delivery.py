"""An alarm reaches its topic: an SNS topic that CloudWatch alarms publish to can receive from
CloudWatch. A topic encrypted with the AWS-managed key (``alias/aws/sns``) cannot: that key's
policy cannot be changed to let ``cloudwatch.amazonaws.com`` use it, so every notification is
dropped. A customer managed key must let CloudWatch ``kms:GenerateDataKey*`` and ``kms:Decrypt``
("Encrypting SNS topics for CloudWatch alarms":
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html).
"""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._plan import key_grants, kms_key, text
from ._rule import Controls, Rule, StackView, as_list

TOPIC = "aws:sns/topic:Topic"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
COMPOSITE_ALARM = "aws:cloudwatch/compositeAlarm:CompositeAlarm"
CLOUDWATCH = "cloudwatch.amazonaws.com"
ACTIONS = ("alarmActions", "okActions", "insufficientDataActions")
# What CloudWatch does with the topic's key when it publishes.
CLOUDWATCH_KMS_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")


def _aws_managed(key_ref: str) -> bool:
    return key_ref == "alias/aws/sns" or key_ref.endswith(":alias/aws/sns")


def _alarm_delivery(view: StackView) -> Iterator[tuple[str, str | None]]:
    targets: set[str] = set()
    for alarm in view.of_type(ALARM, COMPOSITE_ALARM):
        for key in ACTIONS:
            targets |= {text(a) for a in as_list(alarm.props.get(key))}
    for topic in view.of_type(TOPIC):
        if not view.ids_of(topic) & targets:
            continue
        key_ref = text(topic.props.get("kmsMasterKeyId"))
        if not key_ref:
            continue
        if _aws_managed(key_ref):
            yield (
                "receives CloudWatch alarms but is encrypted with the AWS-managed key alias/aws/sns, whose "
                "policy does not let CloudWatch use it: every alarm notification is dropped",
                topic.urn,
            )
            continue
        key = kms_key(view, key_ref)
        if key is None:
            continue  # a key from outside the stack: its policy is not in the plan
        missing = [a for a in CLOUDWATCH_KMS_ACTIONS if not key_grants(key, CLOUDWATCH, a)]
        if missing:
            yield (
                f"receives CloudWatch alarms but its key's policy does not let {CLOUDWATCH} "
                f"{' and '.join(missing)}: alarm notifications are dropped",
                topic.urn,
            )


RULES = [
    Rule(
        "aws-alarm-topic-deliverable",
        "SNS topics that CloudWatch alarms notify can receive from CloudWatch (no AWS-managed key; a "
        "customer managed key lets CloudWatch generate data keys and decrypt).",
        Severity.HIGH,
        Controls(nist=("SI-4", "IR-6"), soc2=("CC7.2", "CC7.3"), pci=("10.7.1",)),
        "Encrypt the topic with a customer managed KMS key whose policy allows Service "
        "cloudwatch.amazonaws.com kms:GenerateDataKey* and kms:Decrypt (scoped with aws:SourceAccount).",
        stack_check=_alarm_delivery,
    ),
]
