"""Pub/Sub: dead-letter policies on work subscriptions, no public topic or subscription access.

A subscription drains a dead-letter topic because the stack wires that topic as another
subscription's dead-letter topic (or labels it role=dead-letter), never because of its name."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, StackView, Subject, get_path, norm, num
from .gcp_storage import PUBLIC_MEMBERS, members_of

SUBSCRIPTION = ("gcp:pubsub/subscription:Subscription",)
TOPIC = ("gcp:pubsub/topic:Topic",)
IAM = (
    "gcp:pubsub/topicIAMMember:TopicIAMMember",
    "gcp:pubsub/topicIAMBinding:TopicIAMBinding",
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
    "gcp:pubsub/subscriptionIAMBinding:SubscriptionIAMBinding",
    "gcp:pubsub/topicIAMPolicy:TopicIAMPolicy",
    "gcp:pubsub/subscriptionIAMPolicy:SubscriptionIAMPolicy",
)


def _dead_letter(view: StackView) -> Iterator[tuple[str, str | None]]:
    subs = view.of_type(*SUBSCRIPTION)
    dead_topics = {
        t.urn
        for sub in subs
        for t in view.referenced(get_path(sub.props, "deadLetterPolicy", "deadLetterTopic"), TOPIC)
    }
    dead_names = {str(get_path(sub.props, "deadLetterPolicy", "deadLetterTopic")) for sub in subs}
    for sub in subs:
        drains = {t.urn for t in view.refers(sub, "topic", TOPIC)}
        labels = sub.props.get("labels") or {}
        if (
            drains & dead_topics
            or str(sub.props.get("topic")) in dead_names
            or labels.get("role") == "dead-letter"
        ):
            continue  # it drains a dead-letter topic
        policy = sub.props.get("deadLetterPolicy")
        if not get_path(policy, "deadLetterTopic"):
            yield (
                f"subscription {sub.name!r} has no deadLetterPolicy.deadLetterTopic: poison messages are "
                "redelivered forever",
                sub.urn,
            )
            continue
        attempts = get_path(policy, "maxDeliveryAttempts")
        if attempts is not None and not (isinstance(attempts, int | float) and 5 <= attempts <= 100):
            yield (
                f"subscription {sub.name!r}: maxDeliveryAttempts is {num(attempts)}; allowed: 5..100",
                sub.urn,
            )


def _not_public(s: Subject) -> Iterator[str]:
    for m in members_of(s.props):
        if norm(m) in PUBLIC_MEMBERS:
            yield f"grants {s.props.get('role') or 'roles in the policy'} to {m}"


RULES = [
    Rule(
        "gcp-pubsub-dead-letter",
        "Pub/Sub work subscriptions have a dead-letter policy.",
        Severity.MEDIUM,
        Controls(nist=("SI-11", "CP-10"), soc2=("A1.2", "CC7.2")),
        "Set dead_letter_policy={dead_letter_topic, max_delivery_attempts} and grant the Pub/Sub service "
        "agent publisher on the DLQ topic and subscriber on this subscription.",
        stack_check=_dead_letter,
    ),
    Rule(
        "gcp-pubsub-not-public",
        "Pub/Sub topics and subscriptions are not granted to allUsers.",
        Severity.CRITICAL,
        Controls(nist=("AC-3", "AC-6"), soc2=("CC6.1",), pci=("7.2.1",)),
        "Grant roles to the exact service accounts instead of allUsers/allAuthenticatedUsers.",
        IAM,
        _not_public,
        checkov=("CKV_GCP_99",),
    ),
]
