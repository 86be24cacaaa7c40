"""Pub/Sub: dead-letter policies on work subscriptions (with the grants the Pub/Sub service agent
needs to forward to the dead-letter topic), no public topic or subscription access.

A subscription drains a dead-letter topic because the stack wires that topic as another
subscription's dead-letter topic (or labels it role=dead-letter), never because of its name.

Pub/Sub forwards an undeliverable message as its service agent
(service-<project number>@gcp-sa-pubsub.iam.gserviceaccount.com): without publisher on the
dead-letter topic and subscriber on the subscription it cannot, and the message is redelivered
as if there were no dead-letter policy. The agent is known by its address, or, while that is
unknown, by the grant's dependency on the ServiceIdentity of pubsub.googleapis.com."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pulumi_policy import PolicyResource, Severity

from ._docs import DocumentError, load_json
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, num
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

TOPIC_IAM = IAM[0], IAM[1], IAM[4]
SUBSCRIPTION_IAM = IAM[2], IAM[3], IAM[5]
PROJECT_IAM = (
    "gcp:projects/iAMMember:IAMMember",
    "gcp:projects/iAMBinding:IAMBinding",
    "gcp:projects/iAMPolicy:IAMPolicy",
)
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
PUBSUB_API = "pubsub.googleapis.com"
AGENT = re.compile(r"^(serviceaccount:)?service-\d+@gcp-sa-pubsub\.iam\.gserviceaccount\.com$", re.I)
AGENT_TEXT = "the Pub/Sub service agent (service-<project number>@gcp-sa-pubsub.iam.gserviceaccount.com)"
# Predefined roles that carry pubsub.topics.publish / pubsub.subscriptions.consume.
PUBLISH_ROLES = frozenset({"roles/pubsub.publisher", "roles/pubsub.editor", "roles/pubsub.admin"})
SUBSCRIBE_ROLES = frozenset({"roles/pubsub.subscriber", "roles/pubsub.editor", "roles/pubsub.admin"})


def _agent_roles(grant: PolicyResource) -> set[str]:
    """The roles ``grant`` gives the Pub/Sub service agent (lower case)."""
    roles: set[str] = set()
    role = norm(grant.props.get("role"))
    for key in ("member", "members"):
        # The dependency on the agent's ServiceIdentity names it even while its address is unknown.
        deps = grant.property_dependencies.get(key, [])
        if any(
            d.resource_type == SERVICE_IDENTITY and str(d.props.get("service")) == PUBSUB_API for d in deps
        ) or any(AGENT.match(str(m)) for m in as_list(grant.props.get(key))):
            roles.add(role)
    if grant.props.get("policyData"):
        try:
            doc: Any = load_json(grant.props.get("policyData"), "policyData")
        except DocumentError:
            doc = {}
        for binding in as_list(doc.get("bindings") if isinstance(doc, dict) else None):
            if isinstance(binding, dict) and any(
                AGENT.match(str(m)) for m in as_list(binding.get("members"))
            ):
                roles.add(norm(binding.get("role")))
    return roles


def _last(value: Any) -> str:
    return str(value).rstrip("/").rsplit("/", 1)[-1]


def _agent_may(
    view: StackView,
    roles: frozenset[str],
    grant_types: tuple[str, ...],
    key: str,
    target: set[str],
    names: set[str],
    project: Any,
) -> bool:
    """Whether the agent holds one of ``roles`` on the target (URNs ``target``, or a name in
    ``names`` when it is outside the stack), or on the whole project."""
    for grant in view.of_type(*grant_types, *PROJECT_IAM):
        if not roles & _agent_roles(grant):
            continue
        if grant.resource_type in PROJECT_IAM:
            where = grant.props.get("project")
            if not where or not project or _last(where) == _last(project):
                return True
        elif {r.urn for r in view.refers(grant, key, TOPIC + SUBSCRIPTION)} & target or (
            _last(grant.props.get(key)) in names
        ):
            return True
    return False


def _agent_grants(view: StackView, sub: PolicyResource) -> Iterator[str]:
    dead_letter = get_path(sub.props, "deadLetterPolicy", "deadLetterTopic")
    topics = {t.urn for t in view.referenced(dead_letter, TOPIC)} | {
        d.urn for d in sub.property_dependencies.get("deadLetterPolicy", []) if d.resource_type in TOPIC
    }
    project = sub.props.get("project")
    if not _agent_may(view, PUBLISH_ROLES, TOPIC_IAM, "topic", topics, {_last(dead_letter)}, project):
        yield (
            f"subscription {sub.name!r} dead-letters to {dead_letter}, but {AGENT_TEXT} holds no "
            "roles/pubsub.publisher on that topic: it cannot forward undeliverable messages there, so they "
            "are redelivered forever"
        )
    own = {sub.urn}
    if not _agent_may(
        view, SUBSCRIBE_ROLES, SUBSCRIPTION_IAM, "subscription", own, view.ids_of(sub), project
    ):
        yield (
            f"subscription {sub.name!r}: {AGENT_TEXT} holds no roles/pubsub.subscriber on it: it cannot "
            "acknowledge the messages it would forward, so none is dead-lettered and they are redelivered "
            "forever"
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
        for problem in _agent_grants(view, sub):
            yield problem, sub.urn


def _not_public(s: Subject) -> Iterator[str]:
    for m in members_of(s.props):
        if norm(m) in PUBLIC_MEMBERS:
            yield f"grants {s.props.get('role') or 'roles in the policy'} to {m}"


RULES = [
    Rule(
        "gcp-pubsub-dead-letter",
        "Pub/Sub work subscriptions have a dead-letter policy, and the Pub/Sub service agent may use it "
        "(publisher on the dead-letter topic, subscriber on the subscription).",
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
