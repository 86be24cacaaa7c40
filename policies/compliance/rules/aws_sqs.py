"""SQS queues: server-side encryption, a wired dead-letter queue, no public queue policy.

A queue is a dead-letter queue because the stack wires it as one (another queue's redrive
policy targets it, or it carries a redrive allow policy), never because of its name; redrive
and redrive-allow policies may be inline or separate resources (aws.sqs.RedrivePolicy,
aws.sqs.RedriveAllowPolicy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import PolicyResource, Severity

from ._docs import DocumentError, load_json, public_grants
from ._rule import Controls, Rule, StackView, Subject, is_false, truthy

QUEUE = ("aws:sqs/queue:Queue",)
POLICY = ("aws:sqs/queuePolicy:QueuePolicy", "aws:sqs/queue:Queue")
REDRIVE = ("aws:sqs/redrivePolicy:RedrivePolicy",)
REDRIVE_ALLOW = ("aws:sqs/redriveAllowPolicy:RedriveAllowPolicy",)


def _sse(s: Subject) -> Iterator[str]:
    if s.props.get("kmsMasterKeyId") or truthy(s.props.get("sqsManagedSseEnabled")):
        return
    if is_false(s.props.get("sqsManagedSseEnabled")):
        yield "sqsManagedSseEnabled is false and no kmsMasterKeyId is set: messages are stored unencrypted"
    else:
        yield "neither sqsManagedSseEnabled nor kmsMasterKeyId is set: say how the queue is encrypted"


def _redrive_doc(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = load_json(value, "redrivePolicy")
    except DocumentError as exc:
        return None, str(exc)
    return (doc, None) if isinstance(doc, dict) else (None, "redrivePolicy is not a JSON object")


def _redrives(view: StackView, queue: PolicyResource) -> list[Any]:
    """The queue's redrive policy documents: inline and from RedrivePolicy resources."""
    docs = [queue.props.get("redrivePolicy")] if queue.props.get("redrivePolicy") else []
    docs += [r.props.get("redrivePolicy") for r in view.referrers(queue, REDRIVE, "queueUrl")]
    return docs


def dead_letter_targets(view: StackView) -> set[str]:
    targets: set[str] = set()
    for q in view.of_type(*QUEUE):
        for raw in _redrives(view, q):
            doc, _ = _redrive_doc(raw)
            if doc and doc.get("deadLetterTargetArn"):
                targets.add(str(doc["deadLetterTargetArn"]))
    return targets


def _dlq(view: StackView) -> Iterator[tuple[str, str | None]]:
    targets = dead_letter_targets(view)
    for q in view.of_type(*QUEUE):
        is_dlq = (
            bool(view.ids_of(q) & targets)
            or bool(q.props.get("redriveAllowPolicy"))
            or bool(view.referrers(q, REDRIVE_ALLOW, "queueUrl"))
        )
        if is_dlq:
            continue
        docs = _redrives(view, q)
        if not docs:
            yield (
                f"queue {q.name!r} has no redrive policy: failed messages have no dead-letter queue",
                q.urn,
            )
            continue
        for raw in docs:
            doc, error = _redrive_doc(raw)
            if error:
                yield f"queue {q.name!r}: {error}", q.urn
            elif doc is not None and not doc.get("deadLetterTargetArn"):
                yield f"queue {q.name!r}: redrivePolicy has no deadLetterTargetArn", q.urn
            elif doc is not None and (
                not isinstance(doc.get("maxReceiveCount"), int | float) or doc["maxReceiveCount"] < 1
            ):
                yield f"queue {q.name!r}: redrivePolicy needs maxReceiveCount >= 1", q.urn


def _public(s: Subject) -> Iterator[str]:
    yield from public_grants(s.props.get("policy"), "queue policy")


RULES = [
    Rule(
        "aws-sqs-encrypted",
        "SQS queues use server-side encryption.",
        Severity.HIGH,
        Controls(nist=("SC-28",), soc2=("CC6.1",), pci=("3.5.1",)),
        "Set sqs_managed_sse_enabled=True, or kms_master_key_id to a customer managed key.",
        QUEUE,
        _sse,
        checkov=("CKV_AWS_27",),
    ),
    Rule(
        "aws-sqs-dead-letter-queue",
        "SQS work queues have a dead-letter queue wired by a redrive policy.",
        Severity.MEDIUM,
        Controls(nist=("SI-11", "CP-10"), soc2=("A1.2", "CC7.2")),
        "Create a DLQ (with redrive_allow_policy) and set redrive_policy="
        "{deadLetterTargetArn, maxReceiveCount} on the work queue (inline or aws.sqs.RedrivePolicy).",
        stack_check=_dlq,
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
        checkov=("CKV_AWS_168", "CKV_AWS_387"),
    ),
]
