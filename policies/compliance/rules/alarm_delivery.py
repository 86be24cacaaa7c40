"""An alarm reaches its topic: an SNS topic that CloudWatch alarms publish to can receive from
CloudWatch. A topic encrypted with the AWS-managed key (``alias/aws/sns``) cannot: that key's
policy cannot be changed to let ``cloudwatch.amazonaws.com`` use it, so every notification is
dropped. A customer managed key must let CloudWatch ``kms:GenerateDataKey*`` and ``kms:Decrypt``
("Encrypting SNS topics for CloudWatch alarms":
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html), for
each alarm that notifies the topic: the grant's ``aws:SourceArn`` and ``aws:SourceAccount``
tests must admit that alarm's ARN and account.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import Severity

from ._plan import condition_holds, key_grants, kms_key, text
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


def _admits(statement: dict[str, Any], alarm_arn: str) -> bool:
    """The grant's aws:SourceArn and aws:SourceAccount tests, if any, admit the alarm's publish."""
    account = alarm_arn.split(":")[4] if alarm_arn.count(":") >= 5 else ""
    context = {"aws:SourceArn": alarm_arn, "aws:SourceAccount": account}
    return condition_holds(statement.get("Condition") or {}, context)


def _alarm_delivery(view: StackView) -> Iterator[tuple[str, str | None]]:
    notifies = [
        (alarm, {text(t) for k in ACTIONS for t in as_list(alarm.props.get(k))})
        for alarm in view.of_type(ALARM, COMPOSITE_ALARM)
    ]
    for topic in view.of_type(TOPIC):
        ids = view.ids_of(topic)
        senders = [alarm for alarm, targets in notifies if ids & targets]
        if not senders:
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
        grants = {a: key_grants(key, CLOUDWATCH, a) or [] for a in CLOUDWATCH_KMS_ACTIONS}
        missing = [a for a, found in grants.items() if not found]
        if missing:
            yield (
                f"receives CloudWatch alarms but its key's policy does not let {CLOUDWATCH} "
                f"{' and '.join(missing)}: alarm notifications are dropped",
                topic.urn,
            )
            continue
        # Each alarm's publish, judged by the grant's conditions (its ARN is known once planned).
        refused = sorted(
            alarm.name
            for alarm in senders
            if (arn := text(alarm.props.get("arn")))
            and not all(any(_admits(g, arn) for g in found) for found in grants.values())
        )
        if refused:
            yield (
                f"receives CloudWatch alarms its key's policy does not let {CLOUDWATCH} use the key for "
                f"(the grant's aws:SourceArn or aws:SourceAccount leaves them out): {', '.join(refused)}; "
                "their notifications are dropped",
                topic.urn,
            )


RULES = [
    Rule(
        "aws-alarm-topic-deliverable",
        "SNS topics that CloudWatch alarms notify can receive from CloudWatch (no AWS-managed key; a "
        "customer managed key lets CloudWatch generate data keys and decrypt, for each of those alarms).",
        Severity.HIGH,
        Controls(nist=("SI-4", "IR-6"), soc2=("CC7.2", "CC7.3"), pci=("10.7.1",)),
        "Encrypt the topic with a customer managed KMS key whose policy allows Service "
        "cloudwatch.amazonaws.com kms:GenerateDataKey* and kms:Decrypt, scoped with aws:SourceAccount and an "
        "aws:SourceArn pattern that covers every alarm notifying the topic.",
        stack_check=_alarm_delivery,
    ),
]
