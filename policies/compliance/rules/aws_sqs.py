"""SQS queues: server-side encryption, a wired dead-letter queue, no public queue policy."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._docs import DocumentError, is_public_principal, load_json, statements
from ._rule import Controls, Rule, Subject, truthy

QUEUE = ("aws:sqs/queue:Queue",)
POLICY = ("aws:sqs/queuePolicy:QueuePolicy", "aws:sqs/queue:Queue")


def _sse(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("sqsManagedSseEnabled")) and not s.props.get("kmsMasterKeyId"):
        yield "enable SSE: sqsManagedSseEnabled=true or a kmsMasterKeyId"


def is_dead_letter_queue(s: Subject) -> bool:
    """A queue that other queues dead-letter into (it says so with a redrive allow policy)."""
    return bool(s.props.get("redriveAllowPolicy"))


def _dlq(s: Subject) -> Iterator[str]:
    if is_dead_letter_queue(s):
        return
    redrive = s.props.get("redrivePolicy")
    if not redrive:
        yield "no redrivePolicy: failed messages have no dead-letter queue (a DLQ sets redriveAllowPolicy)"
        return
    try:
        doc = load_json(redrive, "redrivePolicy")
    except DocumentError as exc:
        yield str(exc)
        return
    if not isinstance(doc, dict) or not doc.get("deadLetterTargetArn"):
        yield "redrivePolicy has no deadLetterTargetArn"
    elif not isinstance(doc.get("maxReceiveCount"), int | float) or doc["maxReceiveCount"] < 1:
        yield "redrivePolicy needs maxReceiveCount >= 1"


def _public(s: Subject) -> Iterator[str]:
    policy = s.props.get("policy")
    if not policy:
        return
    try:
        for stmt in statements(policy, "queue policy"):
            if is_public_principal(stmt):
                actions = ", ".join(stmt.actions) or "actions"
                yield f"queue policy allows {actions} to Principal '*' without a condition"
    except DocumentError as exc:
        yield str(exc)


RULES = [
    Rule(
        "aws-sqs-encrypted",
        "SQS queues use server-side encryption.",
        Severity.HIGH,
        Controls(nist=("SC-28",), soc2=("CC6.1",), pci=("3.5.1",)),
        "Set sqs_managed_sse_enabled=True, or kms_master_key_id to a customer managed key.",
        QUEUE,
        _sse,
    ),
    Rule(
        "aws-sqs-dead-letter-queue",
        "SQS work queues have a dead-letter queue wired by a redrive policy.",
        Severity.MEDIUM,
        Controls(nist=("SI-11", "CP-10"), soc2=("A1.2", "CC7.2")),
        "Create a DLQ (with redrive_allow_policy) and set redrive_policy="
        "{deadLetterTargetArn, maxReceiveCount} on the work queue.",
        QUEUE,
        _dlq,
    ),
    Rule(
        "aws-sqs-no-public-policy",
        "SQS queue policies do not grant access to everyone.",
        Severity.CRITICAL,
        Controls(nist=("AC-3", "AC-6"), soc2=("CC6.1",), pci=("7.2.1",)),
        "Name the exact principals (task roles, SNS topics) in the queue policy, or add an aws:SourceArn "
        "condition.",
        POLICY,
        _public,
    ),
]
