"""Amazon SQS adapter (AWS), on aiobotocore.

The queue and its dead-letter queue are infrastructure (infra/ creates both, with a
RedrivePolicy); the adapter reads the policy at start: ``maxReceiveCount`` less the reserved
delivery (``base.RESERVED_DELIVERIES``) is the app's last attempt, and ``deadLetterTargetArn``
names the dead-letter queue. The worker dead-letters a message itself (SendMessage to the DLQ
with its reason as message attributes, then DeleteMessage), at once, whatever its attempt; the
redrive is the backstop for a worker lost during the reserved delivery. Credentials come from
the standard AWS chain (task role on ECS).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from agent_app.contract import SqsQueue
from agent_app.queues.base import (
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

MAX_BATCH = 10  # SQS's own limit per ReceiveMessage
# A send is one small request: the client's read timeout is set for the long poll (25 s, asked
# twice), far past what a turn holding its session's lock, or a task create, may wait.
PUBLISH_TIMEOUT_SECONDS = 5.0
MAX_VISIBILITY = 43_200


def dlq_url(queue_url: str, dlq_arn: str) -> str:
    """The dead-letter queue's URL: SQS keeps it in the queue's account and region, so at the
    queue's endpoint under the ARN's account and name (arn:aws:sqs:<region>:<account>:<name>)."""
    parts = dlq_arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        raise QueueUnavailable(f"RedrivePolicy.deadLetterTargetArn is not an SQS queue ARN: {dlq_arn!r}")
    url = urlsplit(queue_url)
    return urlunsplit((url.scheme, url.netloc, f"/{parts[4]}/{parts[5]}", "", ""))


def _typed(values: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """String message attributes as SendMessage takes them."""
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


class SqsDelivery(Delivery):
    def __init__(self, raw: dict[str, Any], queue: SqsTaskQueue) -> None:
        self.queue = queue
        self.receipt = raw["ReceiptHandle"]
        self.body = raw["Body"].encode()
        # The message's own attributes (task_id), kept on a dead letter: type and value only.
        self.attributes = {
            name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
            for name, value in raw.get("MessageAttributes", {}).items()
        }
        strings = {name: value.get("StringValue", "") for name, value in self.attributes.items()}
        received = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        before, self.handbacks = copy_state(strings)
        self.attempt = received + before
        self.max_attempts = queue.max_attempts

    async def _visibility(self, seconds: float) -> None:
        await self.queue.client().change_message_visibility(
            QueueUrl=self.queue.target.queue_url,
            ReceiptHandle=self.receipt,
            VisibilityTimeout=min(MAX_VISIBILITY, max(0, math.ceil(seconds))),
        )

    async def ack(self) -> None:
        await self.queue.client().delete_message(
            QueueUrl=self.queue.target.queue_url, ReceiptHandle=self.receipt
        )

    async def release(self, delay_seconds: float = 0) -> None:
        await self._visibility(delay_seconds)

    async def extend(self, lease_seconds: int) -> None:
        await self._visibility(lease_seconds)

    async def dead_letter(self, reason: str) -> None:
        dlq = self.queue.dlq_url
        if dlq is None:
            raise QueueUnavailable("the queue has no RedrivePolicy, so no dead-letter queue to send to")
        attributes = {**self.attributes, **_typed(dead_letter_headers(reason, self.attempt))}
        # Sent before it is deleted: a worker lost in between leaves a copy in each, never none.
        await self.queue.send(dlq, self.body, attributes, "SQS send to the dead-letter queue")
        await self.ack()

    async def send_copy(self) -> None:
        attributes = {**self.attributes, **_typed(requeued_attributes({}, self.attempt, self.handbacks))}
        url = self.queue.target.queue_url
        await self.queue.send(url, self.body, attributes, "SQS send of the requeued copy")


class SqsTaskQueue(TaskQueue):
    kind = "sqs"

    def __init__(self, target: SqsQueue, *, lease_seconds: int) -> None:
        self.target = target
        self.lease = lease_seconds
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self.dlq_url: str | None = None

    def client(self) -> Any:
        if self._client is None:
            raise QueueUnavailable("not connected to SQS")
        return self._client

    async def start(self, *, consume: bool) -> None:
        config = Config(
            connect_timeout=2,
            read_timeout=25,  # above the long-poll wait
            retries={"max_attempts": 2, "mode": "standard"},
        )
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "sqs", region_name=self.target.region, endpoint_url=self.target.endpoint_url, config=config
            )
        )
        if consume:
            attrs = await self._attributes(["RedrivePolicy"])
            policy = json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else None
            self.max_attempts = runs_of(int(policy["maxReceiveCount"])) if policy else None
            self.dlq_url = dlq_url(self.target.queue_url, policy["deadLetterTargetArn"]) if policy else None

    async def _attributes(self, names: list[str]) -> dict[str, str]:
        try:
            out = await bounded(
                self.client().get_queue_attributes(QueueUrl=self.target.queue_url, AttributeNames=names),
                CHECK_TIMEOUT_SECONDS,
                "SQS",
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"SQS: {exc}") from exc
        assert isinstance(out, dict)
        return out.get("Attributes", {})

    async def publish(self, body: bytes, *, task_id: str) -> None:
        await self.send(self.target.queue_url, body, _typed({TASK_ID_ATTRIBUTE: task_id}), "SQS send")

    async def send(self, url: str, body: bytes, attributes: Mapping[str, Any], what: str) -> None:
        """SendMessage to the queue at ``url``, bounded; QueueUnavailable when it fails."""
        try:
            await bounded(
                self.client().send_message(
                    QueueUrl=url, MessageBody=body.decode(), MessageAttributes=dict(attributes)
                ),
                PUBLISH_TIMEOUT_SECONDS,
                what,
            )
        except ReadTimeoutError as exc:  # sent, maybe: no answer came
            raise QueueTimeout(f"{what} got no answer: {exc}") from exc
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"{what} failed: {exc}") from exc

    async def receive(self, max_messages: int, wait_seconds: float = 1.0) -> list[Delivery]:
        try:
            out = await self.client().receive_message(
                QueueUrl=self.target.queue_url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                WaitTimeSeconds=max(0, round(wait_seconds)),
                VisibilityTimeout=self.lease,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"SQS receive failed: {exc}") from exc
        return [SqsDelivery(m, self) for m in out.get("Messages", [])]

    async def check(self) -> None:
        await self._attributes(["ApproximateNumberOfMessages"])

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
