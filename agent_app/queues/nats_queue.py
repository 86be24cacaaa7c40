"""NATS JetStream adapter (on-prem).

The work stream uses work-queue retention (a message is gone once acked) and is created with
one replica per cluster node up to three when it does not exist yet. All workers share one
durable pull consumer, so each message goes to one worker. JetStream has no native
dead-letter queue: after ``max_deliver`` attempts the worker republishes the message to the
DLQ subject, which a second stream keeps, and terminates the original. The consumer allows
one delivery more than ``max_deliver`` (``base.RESERVED_DELIVERIES``) so that a worker killed
during the last attempt still gets the chance to dead-letter the message instead of leaving it
stranded.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from agent_app.contract import NatsQueue
from agent_app.queues.base import (
    CHECK_TIMEOUT_SECONDS,
    TASK_ID_ATTRIBUTE,
    Delivery,
    QueueTimeout,
    QueueUnavailable,
    TaskQueue,
    bounded,
    broker_deliveries,
    copy_state,
    dead_letter_headers,
    requeued_attributes,
)
from agent_app.queues.permissions import NATS_CONSUMER as CONSUMER
from agent_app.queues.permissions import nats_dlq_stream

PUBLISH_TIMEOUT_SECONDS = 3.0


class NatsDelivery(Delivery):
    def __init__(self, msg: Msg, queue: NatsTaskQueue) -> None:
        self.msg = msg
        self.queue = queue
        self.body = msg.data
        before, self.handbacks = copy_state(msg.headers)
        self.attempt = (msg.metadata.num_delivered or 1) + before
        self.max_attempts = queue.target.max_deliver

    async def ack(self) -> None:
        await self.msg.ack_sync(timeout=PUBLISH_TIMEOUT_SECONDS)

    async def release(self, delay_seconds: float = 0) -> None:
        await self.msg.nak(delay=delay_seconds or None)

    async def extend(self, lease_seconds: int) -> None:
        await self.msg.in_progress()  # restarts the consumer's ack_wait (= the lease)

    async def dead_letter(self, reason: str) -> None:
        headers = {**self._own_headers(), **dead_letter_headers(reason, self.attempt)}
        await self.queue.publish_to(self.queue.target.dlq_subject, self.body, headers)
        await self.msg.term()

    async def send_copy(self) -> None:
        headers = requeued_attributes(self._own_headers(), self.attempt, self.handbacks)
        # A message id of this very delivery: JetStream drops a publish of it retried after a
        # lost ack, not the copy of a later hand-back of the same task.
        own = self.msg.headers or {}
        task_id = own.get(TASK_ID_ATTRIBUTE) or own.get("Nats-Msg-Id", "")
        headers["Nats-Msg-Id"] = f"{task_id}@{self.msg.metadata.sequence.stream}"
        await self.queue.publish_to(self.queue.target.subject, self.body, headers)

    def _own_headers(self) -> dict[str, str]:
        """The message's own headers, not the server's: its Nats-Msg-Id (the task id) would make
        a stream drop a later dead letter or copy of the same task within its duplicate window."""
        return {k: v for k, v in (self.msg.headers or {}).items() if not k.startswith("Nats-")}


class NatsTaskQueue(TaskQueue):
    kind = "nats"

    def __init__(
        self,
        target: NatsQueue,
        *,
        lease_seconds: int,
        ca_file: Path | None,
        password: str | None = None,
    ) -> None:
        self.target = target
        self.lease = lease_seconds
        self.ca_file = ca_file
        self.password = password
        self.max_attempts = target.max_deliver
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    def js(self) -> JetStreamContext:
        if self._js is None:
            raise QueueUnavailable("not connected to NATS")
        return self._js

    @property
    def dlq_stream(self) -> str:
        return nats_dlq_stream(self.target.stream)

    async def start(self, *, consume: bool) -> None:
        tls = None
        if any(s.startswith("tls://") for s in self.target.servers):
            tls = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        self._nc = await nats.connect(
            servers=list(self.target.servers),
            tls=tls,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            dont_randomize=True,  # local node first, as the URL lists them
            user=self.target.user,
            password=self.password if self.target.user else None,
        )
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
        replicas = min(3, len(self.target.servers))
        await self._ensure_stream(
            StreamConfig(
                name=self.target.stream,
                subjects=[self.target.subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=120,
            )
        )
        await self._ensure_stream(
            StreamConfig(
                name=self.dlq_stream,
                subjects=[self.target.dlq_subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=replicas,
                max_age=14 * 86_400,
            )
        )
        if consume:
            config = ConsumerConfig(
                durable_name=CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.lease,
                max_deliver=broker_deliveries(self.target.max_deliver),
                filter_subject=self.target.subject,
            )
            await self._js.add_consumer(self.target.stream, config)  # creates, or updates in place
            self._sub = await self._js.pull_subscribe_bind(durable=CONSUMER, stream=self.target.stream)

    async def _ensure_stream(self, config: StreamConfig) -> None:
        js = self.js()
        assert config.name
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)

    async def publish(self, body: bytes, *, task_id: str) -> None:
        # The message id lets JetStream drop a publish retried after a lost ack.
        headers = {"Nats-Msg-Id": task_id, TASK_ID_ATTRIBUTE: task_id}
        await self.publish_to(self.target.subject, body, headers)

    async def publish_to(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        """Publish and wait for the stream's ack: QueueTimeout when none came (it may have been
        stored), QueueUnavailable when refused."""
        try:
            await self.js().publish(subject, body, headers=headers)
        except NatsTimeout as exc:
            raise QueueTimeout(f"NATS publish to {subject} got no ack: {exc!r}") from exc
        except (NatsError, OSError) as exc:
            raise QueueUnavailable(f"NATS publish to {subject} failed: {exc!r}") from exc

    async def receive(self, max_messages: int, wait_seconds: float = 1.0) -> list[Delivery]:
        if self._sub is None:
            raise QueueUnavailable("not consuming: start(consume=True) first")
        try:
            msgs = await self._sub.fetch(batch=max_messages, timeout=wait_seconds)
        except (NatsTimeout, TimeoutError):
            # nats-py raises either, depending on where its deadline ran out: no message came.
            return []
        return [NatsDelivery(m, self) for m in msgs]

    async def stop_receiving(self) -> None:
        # A pull cut short stays open at the server until it expires, and a message released
        # meanwhile is delivered into it (to a worker on its way out): one attempt used up, and
        # the message back only after ack_wait. Gone with the subscription's interest.
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def check(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            raise QueueUnavailable("not connected to NATS")
        await bounded(self.js().stream_info(self.target.stream), CHECK_TIMEOUT_SECONDS, "NATS JetStream")

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
