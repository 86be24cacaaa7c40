"""Amazon SQS adapter (AWS), on aiobotocore.

The queue and its dead-letter queue are infrastructure (infra/ creates both, with a
RedrivePolicy); the adapter only reads the policy's ``maxReceiveCount`` to know which
attempt is the last. Dead-lettering is SQS's native redrive: the worker makes the message
visible again and SQS moves it to the DLQ on the receive after the last attempt. Credentials
come from the standard AWS chain (task role on ECS).
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from agent_app.contract import SqsQueue
from agent_app.queues.base import CHECK_TIMEOUT_SECONDS, Delivery, QueueUnavailable, TaskQueue, bounded

MAX_BATCH = 10  # SQS's own limit per ReceiveMessage
# A send is one small request: the client's read timeout is set for the long poll (25 s, asked
# twice), far past what a turn holding its session's lock, or a task create, may wait.
PUBLISH_TIMEOUT_SECONDS = 5.0
MAX_VISIBILITY = 43_200


class SqsDelivery(Delivery):
    def __init__(self, raw: dict[str, Any], queue: SqsTaskQueue) -> None:
        self.queue = queue
        self.receipt = raw["ReceiptHandle"]
        self.body = raw["Body"].encode()
        self.attempt = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
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
        # Native redrive: visible again now, moved to the DLQ by SQS on its next receive.
        await self._visibility(0)


class SqsTaskQueue(TaskQueue):
    kind = "sqs"

    def __init__(self, target: SqsQueue, *, lease_seconds: int) -> None:
        self.target = target
        self.lease = lease_seconds
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

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
            policy = attrs.get("RedrivePolicy")
            self.max_attempts = int(json.loads(policy)["maxReceiveCount"]) if policy else None

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
        try:
            await bounded(
                self.client().send_message(
                    QueueUrl=self.target.queue_url,
                    MessageBody=body.decode(),
                    MessageAttributes={"task_id": {"DataType": "String", "StringValue": task_id}},
                ),
                PUBLISH_TIMEOUT_SECONDS,
                "SQS send",
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"SQS send failed: {exc}") from exc

    async def receive(self, max_messages: int, wait_seconds: float = 1.0) -> list[Delivery]:
        try:
            out = await self.client().receive_message(
                QueueUrl=self.target.queue_url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                WaitTimeSeconds=max(0, round(wait_seconds)),
                VisibilityTimeout=self.lease,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"SQS receive failed: {exc}") from exc
        return [SqsDelivery(m, self) for m in out.get("Messages", [])]

    async def check(self) -> None:
        await self._attributes(["ApproximateNumberOfMessages"])

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
