"""Pub/Sub: dead-letter policies on work subscriptions, no public topic or subscription access."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, as_list, get_path

SUBSCRIPTION = ("gcp:pubsub/subscription:Subscription",)
IAM = (
    "gcp:pubsub/topicIAMMember:TopicIAMMember",
    "gcp:pubsub/topicIAMBinding:TopicIAMBinding",
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
    "gcp:pubsub/subscriptionIAMBinding:SubscriptionIAMBinding",
)
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
DEAD_LETTER_HINTS = ("dead", "dlq", "dlt")


def _is_dead_letter_subscription(s: Subject) -> bool:
    """The subscription that drains the dead-letter topic has no dead-letter policy of its own."""
    labels = s.props.get("labels") or {}
    names = f"{s.name} {s.props.get('name') or ''} {s.props.get('topic') or ''}".lower()
    return labels.get("role") == "dead-letter" or any(h in names for h in DEAD_LETTER_HINTS)


def _dead_letter(s: Subject) -> Iterator[str]:
    if _is_dead_letter_subscription(s):
        return
    policy = s.props.get("deadLetterPolicy")
    if not get_path(policy, "deadLetterTopic"):
        yield "no deadLetterPolicy.deadLetterTopic: poison messages are redelivered forever"
        return
    attempts = get_path(policy, "maxDeliveryAttempts")
    if attempts is not None and not (isinstance(attempts, int | float) and 5 <= attempts <= 100):
        yield f"deadLetterPolicy.maxDeliveryAttempts is {attempts}; Pub/Sub accepts 5..100"


def _not_public(s: Subject) -> Iterator[str]:
    members = [s.props.get("member"), *as_list(s.props.get("members"))]
    for m in members:
        if m in PUBLIC_MEMBERS:
            yield f"grants {s.props.get('role')} to {m}"


RULES = [
    Rule(
        "gcp-pubsub-dead-letter",
        "Pub/Sub work subscriptions have a dead-letter policy.",
        Severity.MEDIUM,
        Controls(nist=("SI-11", "CP-10"), soc2=("A1.2", "CC7.2")),
        "Set dead_letter_policy={dead_letter_topic, max_delivery_attempts} and grant the Pub/Sub service "
        "agent publisher on the DLQ topic and subscriber on this subscription.",
        SUBSCRIPTION,
        _dead_letter,
    ),
    Rule(
        "gcp-pubsub-not-public",
        "Pub/Sub topics and subscriptions are not granted to allUsers.",
        Severity.CRITICAL,
        Controls(nist=("AC-3", "AC-6"), soc2=("CC6.1",), pci=("7.2.1",)),
        "Grant roles to the exact service accounts instead of allUsers/allAuthenticatedUsers.",
        IAM,
        _not_public,
    ),
]
