"""One harness per broker, so every queue scenario is written once and run on all three.

A harness creates a fresh queue (with its dead-letter queue) on a real broker, set as infra
sets it (``max_attempts`` runs, one delivery more: ``agent_app.queues.base``), hands out the
``AGENT_*`` environment that points the app at it, and lets a test publish raw bytes, read the
dead-letter queue (bodies, and the reason and delivery the worker sent with each) and count what
is still pending.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any, Protocol

import boto3
import nats
import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1 import types as pst
from nats.js.errors import NotFoundError

from agent_app.contract import pubsub_queue_url, sqs_queue_url
from agent_app.queues.base import broker_deliveries
from skyfleet.testing.servers import MotoServer, NatsServer
from tests.support.pubsub_server import PubSubServer

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Broker(Protocol):
    kind: str
    max_attempts: int
    env: dict[str, str]

    def publish_raw(self, body: bytes) -> None: ...

    def dead_letters(self) -> list[bytes]: ...

    def dead_lettered(self) -> list[tuple[bytes, dict[str, str]]]:
        """Each dead letter's body, with the reason and delivery the worker sent it with."""
        ...

    def backlog(self) -> int: ...


class NatsBroker:
    kind = "nats"
    max_attempts = 3

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        queue = server.queue(max_deliver=self.max_attempts)
        self.stream, self.subject, self.dlq = queue.stream, queue.subject, queue.dlq_subject
        self.env = {"AGENT_QUEUE_URL": queue.url}

    async def _with_js(self, fn: Any) -> Any:
        nc = await nats.connect(f"nats://{self.server.hosts}")
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    def publish_raw(self, body: bytes) -> None:
        asyncio.run(self._with_js(lambda js: js.publish(self.subject, body)))

    def dead_letters(self) -> list[bytes]:
        return [body for body, _ in self.dead_lettered()]

    def dead_lettered(self) -> list[tuple[bytes, dict[str, str]]]:
        async def read(js: Any) -> list[tuple[bytes, dict[str, str]]]:
            try:
                info = await js.stream_info(f"{self.stream}_DLQ")
            except NotFoundError:
                return []
            if not info.state.messages:
                return []
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(f"{self.stream}_DLQ", seq)
                out.append((msg.data, dict(msg.headers or {})))
            return out

        return asyncio.run(self._with_js(read))

    def backlog(self) -> int:
        async def count(js: Any) -> int:
            return (await js.stream_info(self.stream)).state.messages

        return asyncio.run(self._with_js(count))


class SqsBroker:
    kind = "sqs"
    max_attempts = 3

    def __init__(self, moto: MotoServer) -> None:
        self.sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1", **_aws_creds())
        name = f"tasks-{uuid.uuid4().hex[:8]}"
        self.dlq_url = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        receives = broker_deliveries(self.max_attempts)
        policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(receives)})
        self.queue_url = self.sqs.create_queue(
            QueueName=name, Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "30"}
        )["QueueUrl"]
        self.env = {
            "AGENT_QUEUE_URL": sqs_queue_url(self.queue_url, endpoint=moto.endpoint, region="us-east-1"),
            **AWS_ENV,
        }

    def publish_raw(self, body: bytes) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body.decode())

    def _dead(self) -> list[dict[str, Any]]:
        out = self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageAttributeNames=["All"]
        )
        return out.get("Messages", [])

    def dead_letters(self) -> list[bytes]:
        return [body for body, _ in self.dead_lettered()]

    def dead_lettered(self) -> list[tuple[bytes, dict[str, str]]]:
        return [
            (m["Body"].encode(), {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()})
            for m in self._dead()
        ]

    def backlog(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _aws_creds() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class PubSubBroker:
    kind = "pubsub"
    max_attempts = 4  # the service's minimum of 5 deliveries for a dead-letter policy, less one

    def __init__(self, server: PubSubServer) -> None:
        os.environ["PUBSUB_EMULATOR_HOST"] = server.host  # how every Google client finds a local endpoint
        self.server = server
        self.project = "skyfleet-test"
        name = uuid.uuid4().hex[:8]
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = self.publisher.topic_path(self.project, f"tasks-{name}")
        self.dlq_topic = self.publisher.topic_path(self.project, f"tasks-{name}-dlq")
        self.subscription = self.subscriber.subscription_path(self.project, f"workers-{name}")
        self.dlq_subscription = self.subscriber.subscription_path(self.project, f"dlq-{name}")
        self.publisher.create_topic(name=self.topic)
        self.publisher.create_topic(name=self.dlq_topic)
        self.subscriber.create_subscription(
            request=pst.Subscription(
                name=self.subscription,
                topic=self.topic,
                ack_deadline_seconds=10,
                dead_letter_policy=pst.DeadLetterPolicy(
                    dead_letter_topic=self.dlq_topic,
                    max_delivery_attempts=broker_deliveries(self.max_attempts),
                ),
            )
        )
        self.subscriber.create_subscription(name=self.dlq_subscription, topic=self.dlq_topic)
        url = pubsub_queue_url(self.project, f"tasks-{name}", f"workers-{name}")
        self.env = {"AGENT_QUEUE_URL": url, "PUBSUB_EMULATOR_HOST": server.host}

    def publish_raw(self, body: bytes) -> None:
        self.publisher.publish(self.topic, body).result(timeout=10)

    def _dead(self) -> list[Any]:
        out = self.subscriber.pull(subscription=self.dlq_subscription, max_messages=10, timeout=2)
        if out.received_messages:  # handed back at once, for the next read to see them too
            self.subscriber.modify_ack_deadline(
                subscription=self.dlq_subscription,
                ack_ids=[m.ack_id for m in out.received_messages],
                ack_deadline_seconds=0,
            )
        return [m.message for m in out.received_messages]

    def dead_letters(self) -> list[bytes]:
        return [body for body, _ in self.dead_lettered()]

    def dead_lettered(self) -> list[tuple[bytes, dict[str, str]]]:
        return [(bytes(m.data), dict(m.attributes)) for m in self._dead()]

    def backlog(self) -> int:
        return self.server.backlog(self.subscription)


def make_broker(kind: str, request: pytest.FixtureRequest) -> Broker:
    """A fresh queue on the session's broker of ``kind`` (``nats``, ``sqs`` or ``pubsub``)."""
    if kind == "nats":
        return NatsBroker(request.getfixturevalue("nats_server"))
    if kind == "sqs":
        return SqsBroker(request.getfixturevalue("moto_server"))
    return PubSubBroker(request.getfixturevalue("pubsub_server"))
