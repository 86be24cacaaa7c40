"""Pub/Sub: the task topic the api publishes to, the subscription the worker pulls, and a
dead-letter topic that takes a task after ``maxDeliveryAttempts`` failed deliveries, with a
subscription that holds the dead letters for inspection and replay.

Retention: the topics keep messages for the spec's full retention (up to 14 days; Pub/Sub
allows 31), and a subscription can be seeked back over it; a subscription itself holds unacked
messages at most 7 days, Pub/Sub's limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from agent_app import contract
from agent_app.queues.base import broker_deliveries
from infra.gcp.site import GcpCapability, Site
from infra.spec import QueueSpec

# Pub/Sub's own limits (delivery attempts are checked before anything is registered). They
# bound the subscription's deliveries: the spec's attempts and the worker's reserved one.
MAX_SUBSCRIPTION_RETENTION_SECONDS = 7 * 24 * 3600
MIN_DELIVERY_ATTEMPTS = 5
MAX_DELIVERY_ATTEMPTS = 100


def seconds(value: int) -> str:
    return f"{value}s"


def subscription_retention(value: int) -> str:
    """A subscription's retention: the spec's, within Pub/Sub's 7-day limit."""
    return seconds(min(value, MAX_SUBSCRIPTION_RETENTION_SECONDS))


@dataclass(frozen=True)
class QueueArgs:
    site: Site
    queue: QueueSpec


class Queue(GcpCapability):
    def __init__(self, name: str, args: QueueArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site, q = args.site, args.queue
        labels = dict(site.labels)

        # Pub/Sub's service agent moves dead letters. Google creates it lazily; generating it
        # here means the grants below never name an agent that does not exist yet.
        self.service_agent = gcp.projects.ServiceIdentity(
            "pubsub-agent", project=site.project, service="pubsub.googleapis.com", opts=self.child()
        )
        service_agent = pulumi.Output.concat("serviceAccount:", self.service_agent.email)

        # Tasks the api enqueues (Google-managed encryption at rest).
        self.topic = gcp.pubsub.Topic(
            "tasks",
            name=site.resource_name("tasks"),
            project=site.project,
            message_retention_duration=seconds(q.retention_seconds),
            labels=labels,
            opts=self.child(),
        )

        # Where a task lands after max delivery attempts.
        self.dead_letter_topic = gcp.pubsub.Topic(
            "tasks-dead-letter",
            name=site.resource_name("tasks-dead-letter"),
            project=site.project,
            message_retention_duration=seconds(q.dlq_retention_seconds),
            labels=labels,
            opts=self.child(),
        )

        # The worker's pull subscription: the ack deadline is the task lease, failed deliveries
        # back off, and the worker publishes a task that failed its attempts to the dead-letter
        # topic. One delivery more than the attempts, for the worker to find a task whose last run
        # was lost with its worker (agent_app.queues.base). Never expires.
        self.subscription = gcp.pubsub.Subscription(
            "tasks-worker",
            name=site.resource_name("tasks-worker"),
            project=site.project,
            topic=self.topic.id,
            ack_deadline_seconds=q.visibility_timeout_seconds,
            message_retention_duration=subscription_retention(q.retention_seconds),
            retain_acked_messages=False,
            enable_exactly_once_delivery=q.exactly_once_delivery,
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
            retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(
                minimum_backoff="10s", maximum_backoff="600s"
            ),
            dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                dead_letter_topic=self.dead_letter_topic.id,
                max_delivery_attempts=broker_deliveries(q.max_delivery_attempts),
            ),
            labels=labels,
            opts=self.child(),
        )

        # Holds dead letters (a topic without a subscription drops them) for the DLQ alert,
        # inspection and replay.
        self.dead_letter_subscription = gcp.pubsub.Subscription(
            "tasks-dead-letter-hold",
            name=site.resource_name("tasks-dead-letter-hold"),
            project=site.project,
            topic=self.dead_letter_topic.id,
            ack_deadline_seconds=60,
            message_retention_duration=subscription_retention(q.dlq_retention_seconds),
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
            labels=labels,
            opts=self.child(),
        )

        # The service agent may publish dead letters to the dead-letter topic only ...
        self.agent_publisher = gcp.pubsub.TopicIAMMember(
            "dead-letter-agent-publisher",
            project=site.project,
            topic=self.dead_letter_topic.name,
            role="roles/pubsub.publisher",
            member=service_agent,
            opts=self.child(),
        )
        # ... and acknowledge (remove) them from the source subscription only.
        self.agent_subscriber = gcp.pubsub.SubscriptionIAMMember(
            "dead-letter-agent-subscriber",
            project=site.project,
            subscription=self.subscription.name,
            role="roles/pubsub.subscriber",
            member=service_agent,
            opts=self.child(),
        )

        # The app's AGENT_QUEUE_URL.
        self.url: pulumi.Output[str] = pulumi.Output.all(self.topic.name, self.subscription.name).apply(
            lambda names: contract.pubsub_queue_url(site.project, names[0], names[1])
        )
        self.register_outputs(
            {
                "topic": self.topic.name,
                "subscription": self.subscription.name,
                "deadLetterTopic": self.dead_letter_topic.name,
                "deadLetterSubscription": self.dead_letter_subscription.name,
                "url": self.url,
            }
        )
