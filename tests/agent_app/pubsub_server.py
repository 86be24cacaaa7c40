"""An in-process gRPC server speaking Google Pub/Sub's real wire protocol.

There is no Pub/Sub emulator on this machine (Google's is Java, shipped with gcloud), so the
boundary is the network protocol itself: a real gRPC server implementing the
``google.pubsub.v1.Publisher`` and ``google.pubsub.v1.Subscriber`` services with the request
and response messages shipped in google-cloud-pubsub (``google.pubsub_v1.types``), reached
by the real client library through ``PUBSUB_EMULATOR_HOST``, exactly as it reaches Google's
emulator. It models the service semantics the agent relies on: per-subscription fan-out,
ack deadlines with redelivery on expiry, ``ModifyAckDeadline`` (0 = nack), delivery
attempts, and dead-letter forwarding after ``max_delivery_attempts``. It enforces the
service's documented limits (ack deadline 10-600 s on a subscription, 0-600 s on modify,
max_delivery_attempts 5-100) so a configuration the real service rejects fails here too.
Only the RPCs the agent and its tests use are implemented; the rest answer UNIMPLEMENTED.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from google.pubsub_v1 import types as t

from tests.agent_app.servers import free_port


@dataclass
class _Entry:
    message: t.PubsubMessage
    attempts: int = 0
    ack_id: str = ""
    deadline: float | None = None  # None: available for delivery


@dataclass
class _Sub:
    config: t.Subscription
    entries: dict[str, _Entry] = field(default_factory=dict)  # by message id


class PubSubServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.topics: dict[str, t.Topic] = {}
        self.subs: dict[str, _Sub] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._flowing = threading.Event()
        self.held: Counter[str] = Counter()  # calls taken while stalled, by method
        self._flowing.set()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        publisher = {
            "CreateTopic": self._unary(self.create_topic, t.Topic, t.Topic),
            "GetTopic": self._unary(self.get_topic, t.GetTopicRequest, t.Topic),
            "Publish": self._unary(self.publish, t.PublishRequest, t.PublishResponse),
        }
        subscriber = {
            "CreateSubscription": self._unary(self.create_subscription, t.Subscription, t.Subscription),
            "GetSubscription": self._unary(self.get_subscription, t.GetSubscriptionRequest, t.Subscription),
            "Pull": self._unary(self.pull, t.PullRequest, t.PullResponse),
            "Acknowledge": self._unary(self.acknowledge, t.AcknowledgeRequest, None),
            "ModifyAckDeadline": self._unary(self.modify_ack_deadline, t.ModifyAckDeadlineRequest, None),
        }
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
                grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
            )
        )
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _unary(self, fn: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
        serialize = response_type.serialize if response_type else empty_pb2.Empty.SerializeToString

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._flowing.is_set():
                with self._cond:
                    self.held[fn.__name__] += 1
                self._flowing.wait()
            return fn(request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_type.deserialize, response_serializer=serialize
        )

    def stall(self) -> None:
        """Take every call and answer none (an endpoint black-holed mid-call) until :meth:`flow`."""
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    def start(self) -> PubSubServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self.flow()
        self._server.stop(grace=0).wait()

    # --- Publisher ---------------------------------------------------------------------

    def create_topic(self, request: t.Topic, context: grpc.ServicerContext) -> t.Topic:
        with self._cond:
            if request.name in self.topics:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {request.name}")
            self.topics[request.name] = request
            return request

    def get_topic(self, request: t.GetTopicRequest, context: grpc.ServicerContext) -> t.Topic:
        with self._cond:
            if request.topic not in self.topics:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            return self.topics[request.topic]

    def _publish_locked(self, topic: str, messages: list[t.PubsubMessage]) -> list[str]:
        ids = []
        now = time.time()
        for message in messages:
            message_id = str(next(self._ids))
            stamped = t.PubsubMessage(
                data=message.data,
                attributes=dict(message.attributes),
                ordering_key=message.ordering_key,
                message_id=message_id,
                publish_time=timestamp_pb2.Timestamp(seconds=int(now), nanos=int((now % 1) * 1e9)),
            )
            for sub in self.subs.values():
                if sub.config.topic == topic:
                    sub.entries[message_id] = _Entry(stamped)
            ids.append(message_id)
        self._cond.notify_all()
        return ids

    def publish(self, request: t.PublishRequest, context: grpc.ServicerContext) -> t.PublishResponse:
        with self._cond:
            if request.topic not in self.topics:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            return t.PublishResponse(message_ids=self._publish_locked(request.topic, list(request.messages)))

    # --- Subscriber --------------------------------------------------------------------

    def create_subscription(self, request: t.Subscription, context: grpc.ServicerContext) -> t.Subscription:
        with self._cond:
            if request.name in self.subs:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Subscription already exists: {request.name}")
            if request.topic not in self.topics:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            deadline = request.ack_deadline_seconds or 10
            if not 10 <= deadline <= 600:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_seconds must be between 10 and 600"
                )
            policy = request.dead_letter_policy
            if policy and policy.dead_letter_topic:
                if not 5 <= (policy.max_delivery_attempts or 5) <= 100:
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "max_delivery_attempts must be between 5 and 100"
                    )
                if not policy.max_delivery_attempts:
                    policy.max_delivery_attempts = 5
            request.ack_deadline_seconds = deadline
            self.subs[request.name] = _Sub(request)
            return request

    def get_subscription(
        self, request: t.GetSubscriptionRequest, context: grpc.ServicerContext
    ) -> t.Subscription:
        with self._cond:
            if request.subscription not in self.subs:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Subscription not found: {request.subscription}")
            return self.subs[request.subscription].config

    def _sub(self, name: str, context: grpc.ServicerContext) -> _Sub:
        if name not in self.subs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Subscription not found: {name}")
        return self.subs[name]

    def _expire_locked(self, sub: _Sub) -> None:
        """Return lapsed messages to the queue, or dead-letter those out of attempts."""
        now = time.monotonic()
        policy = sub.config.dead_letter_policy
        for message_id, entry in list(sub.entries.items()):
            if entry.deadline is not None and entry.deadline <= now:
                entry.deadline = None
                entry.ack_id = ""
            if (
                entry.deadline is None
                and policy
                and policy.dead_letter_topic
                and entry.attempts >= policy.max_delivery_attempts
            ):
                del sub.entries[message_id]
                if policy.dead_letter_topic in self.topics:
                    self._publish_locked(policy.dead_letter_topic, [entry.message])

    def pull(self, request: t.PullRequest, context: grpc.ServicerContext) -> t.PullResponse:
        give_up = time.monotonic() + max(0.0, (context.time_remaining() or 10.0) - 0.05)
        with self._cond:
            sub = self._sub(request.subscription, context)
            while True:
                self._expire_locked(sub)
                ready = [e for e in sub.entries.values() if e.deadline is None]
                if ready or time.monotonic() >= give_up:
                    break
                self._cond.wait(min(0.05, max(0.0, give_up - time.monotonic())))
            tracked = bool(sub.config.dead_letter_policy and sub.config.dead_letter_policy.dead_letter_topic)
            out = []
            for entry in ready[: max(1, request.max_messages)]:
                entry.attempts += 1
                entry.ack_id = f"{entry.message.message_id}-{entry.attempts}-{next(self._ids)}"
                entry.deadline = time.monotonic() + sub.config.ack_deadline_seconds
                out.append(
                    t.ReceivedMessage(
                        ack_id=entry.ack_id,
                        message=entry.message,
                        delivery_attempt=entry.attempts if tracked else 0,
                    )
                )
            return t.PullResponse(received_messages=out)

    def _by_ack_id(self, sub: _Sub, ack_ids: list[str]) -> list[tuple[str, _Entry]]:
        wanted = set(ack_ids)
        return [(mid, e) for mid, e in sub.entries.items() if e.ack_id and e.ack_id in wanted]

    def acknowledge(self, request: t.AcknowledgeRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self._cond:
            sub = self._sub(request.subscription, context)
            for message_id, _ in self._by_ack_id(sub, list(request.ack_ids)):
                del sub.entries[message_id]
            return empty_pb2.Empty()

    def modify_ack_deadline(
        self, request: t.ModifyAckDeadlineRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        if not 0 <= request.ack_deadline_seconds <= 600:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_seconds must be between 0 and 600")
        with self._cond:
            sub = self._sub(request.subscription, context)
            for _, entry in self._by_ack_id(sub, list(request.ack_ids)):
                entry.deadline = time.monotonic() + request.ack_deadline_seconds
            self._expire_locked(sub)
            self._cond.notify_all()
            return empty_pb2.Empty()

    # --- test helpers ------------------------------------------------------------------

    def backlog(self, subscription: str) -> int:
        with self._cond:
            return len(self.subs[subscription].entries)
