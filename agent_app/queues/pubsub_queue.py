"""Google Cloud Pub/Sub adapter (GCP), on google-cloud-pubsub.

Topic, subscription and dead-letter topic are infrastructure (infra/ creates them with a
dead-letter policy); the adapter reads the policy at start: ``max_delivery_attempts`` less the
reserved delivery (``base.RESERVED_DELIVERIES``) is the app's last attempt, and
``dead_letter_topic`` is where the worker publishes a dead letter itself (with its reason as
attributes, then acks it), at once, whatever its attempt; the policy's own forwarding is the
backstop for a worker lost during the reserved delivery.

It uses unary Pull rather than streaming pull so that the worker decides how much it takes,
and sets each message's ack deadline to the task lease right after the pull (the
subscription's own deadline cannot go below 10 s). The blocking client calls run in threads.
Credentials are Application Default Credentials (workload identity on Cloud Run / GKE); like
every Google client, it honours ``PUBSUB_EMULATOR_HOST`` for a local endpoint.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from typing import Any

# google-api-core warns on every import about a Python end-of-life years away; keep logs clean.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")

from google.api_core import exceptions as gexc  # noqa: E402
from google.cloud import pubsub_v1  # noqa: E402

from agent_app.contract import PubSubQueue  # noqa: E402
from agent_app.queues.base import (  # noqa: E402
    CHECK_TIMEOUT_SECONDS,
    TASK_ID_ATTRIBUTE,
    Delivery,
    QueueTimeout,
    QueueUnavailable,
    TaskQueue,
    bounded,
    copy_state,
    dead_letter_headers,
    requeued_attributes,
    runs_of,
)

MAX_ACK_DEADLINE = 600
PUBLISH_TIMEOUT_SECONDS = 5.0
RPC_TIMEOUT_SECONDS = 5.0


class PubSubDelivery(Delivery):
    def __init__(self, received: Any, queue: PubSubTaskQueue) -> None:
        self.queue = queue
        self.ack_id: str = received.ack_id
        self.body = bytes(received.message.data)
        self.attributes = dict(received.message.attributes)
        # delivery_attempt is only tracked when the subscription has a dead-letter policy.
        before, self.handbacks = copy_state(self.attributes)
        self.attempt = (received.delivery_attempt or 1) + before
        self.max_attempts = queue.max_attempts

    async def ack(self) -> None:
        await self.queue.call("acknowledge", subscription=self.queue.subscription, ack_ids=[self.ack_id])

    async def _deadline(self, seconds: float) -> None:
        await self.queue.call(
            "modify_ack_deadline",
            subscription=self.queue.subscription,
            ack_ids=[self.ack_id],
            ack_deadline_seconds=min(MAX_ACK_DEADLINE, max(0, math.ceil(seconds))),
        )

    async def release(self, delay_seconds: float = 0) -> None:
        await self._deadline(delay_seconds)

    async def extend(self, lease_seconds: int) -> None:
        await self._deadline(lease_seconds)

    async def dead_letter(self, reason: str) -> None:
        # Published before it is acked: a worker lost in between leaves a copy in each, never none.
        attributes = {**self.attributes, **dead_letter_headers(reason, self.attempt)}
        await self.queue.publish_to(self.queue.dead_letter_topic, self.body, attributes)
        await self.ack()

    async def send_copy(self) -> None:
        attributes = requeued_attributes(self.attributes, self.attempt, self.handbacks)
        await self.queue.publish_to(self.queue.topic, self.body, attributes)


class PubSubTaskQueue(TaskQueue):
    kind = "pubsub"

    def __init__(self, target: PubSubQueue, *, lease_seconds: int) -> None:
        self.target = target
        self.lease = min(MAX_ACK_DEADLINE, lease_seconds)
        self.topic = f"projects/{target.project}/topics/{target.topic}"
        self.subscription = f"projects/{target.project}/subscriptions/{target.subscription}"
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._consuming = False
        self.dead_letter_topic: str | None = None

    async def call(self, method: str, **request: Any) -> Any:
        """A unary subscriber RPC in a thread, bounded by a timeout and without client retries."""
        if self._subscriber is None:
            raise QueueUnavailable("not connected to Pub/Sub")
        fn = getattr(self._subscriber, method)
        try:
            return await asyncio.to_thread(fn, request=request, timeout=RPC_TIMEOUT_SECONDS, retry=None)
        except gexc.GoogleAPICallError as exc:
            raise QueueUnavailable(f"Pub/Sub {method} failed: {exc}") from exc

    async def start(self, *, consume: bool) -> None:
        self._publisher = pubsub_v1.PublisherClient()
        self._subscriber = pubsub_v1.SubscriberClient()
        self._consuming = consume
        if consume:
            sub = await self.call("get_subscription", subscription=self.subscription)
            policy = sub.dead_letter_policy
            if policy and policy.dead_letter_topic:
                self.max_attempts = runs_of(policy.max_delivery_attempts)
                self.dead_letter_topic = policy.dead_letter_topic

    async def publish(self, body: bytes, *, task_id: str) -> None:
        await self.publish_to(self.topic, body, {TASK_ID_ATTRIBUTE: task_id})

    async def publish_to(self, topic: str | None, body: bytes, attributes: dict[str, str]) -> None:
        if self._publisher is None:
            raise QueueUnavailable("not connected to Pub/Sub")
        if topic is None:
            raise QueueUnavailable("the subscription has no dead-letter policy, so no topic to send to")
        try:
            future = self._publisher.publish(topic, body, **attributes)
            await bounded(asyncio.wrap_future(future), PUBLISH_TIMEOUT_SECONDS, "Pub/Sub publish")  # type: ignore[arg-type]
        except gexc.DeadlineExceeded as exc:  # sent, maybe: no answer came
            raise QueueTimeout(f"Pub/Sub publish got no answer: {exc}") from exc
        except gexc.GoogleAPICallError as exc:
            raise QueueUnavailable(f"Pub/Sub publish failed: {exc}") from exc

    async def receive(self, max_messages: int, wait_seconds: float = 1.0) -> list[Delivery]:
        if self._subscriber is None:
            raise QueueUnavailable("not connected to Pub/Sub")
        try:
            out = await asyncio.to_thread(
                self._subscriber.pull,
                request={"subscription": self.subscription, "max_messages": max_messages},
                timeout=max(wait_seconds, 0.5),
                retry=None,
            )
        except gexc.DeadlineExceeded:
            return []
        except gexc.GoogleAPICallError as exc:
            raise QueueUnavailable(f"Pub/Sub pull failed: {exc}") from exc
        deliveries = [PubSubDelivery(m, self) for m in out.received_messages]
        if deliveries:
            await self.call(
                "modify_ack_deadline",
                subscription=self.subscription,
                ack_ids=[d.ack_id for d in deliveries],
                ack_deadline_seconds=self.lease,
            )
        return list(deliveries)

    async def check(self) -> None:
        """Readiness asks about the resource this process uses, with the grant it already
        holds: the api its topic (pubsub.topics.get), the worker its subscription
        (pubsub.subscriptions.get)."""
        if self._consuming:
            await bounded(
                self.call("get_subscription", subscription=self.subscription),
                CHECK_TIMEOUT_SECONDS + 1,
                "Pub/Sub",
            )
            return
        if self._publisher is None:
            raise QueueUnavailable("not connected to Pub/Sub")
        publisher = self._publisher
        try:
            await bounded(
                asyncio.to_thread(
                    publisher.get_topic, request={"topic": self.topic}, timeout=CHECK_TIMEOUT_SECONDS
                ),
                CHECK_TIMEOUT_SECONDS + 1,
                "Pub/Sub",
            )
        except gexc.GoogleAPICallError as exc:
            raise QueueUnavailable(f"Pub/Sub topic check failed: {exc}") from exc

    async def close(self) -> None:
        if self._publisher is not None:
            await asyncio.to_thread(self._publisher.stop)
        if self._subscriber is not None:
            await asyncio.to_thread(self._subscriber.close)
