"""The gRPC front: Google's ``google.pubsub.v1.Publisher`` and ``Subscriber`` services.

The real client library reaches it through ``PUBSUB_EMULATOR_HOST`` (plain gRPC, no
credentials, as it reaches Google's own emulator). One listener is the main port; with IAM
configured, each caller (a service account of the plan) gets a port of its own on which its
calls are checked against the plan's grants (see ``iam``).

Served: CreateTopic, GetTopic, ListTopics, Publish, CreateSubscription, GetSubscription,
ListSubscriptions, Pull, Acknowledge, ModifyAckDeadline. Every other RPC (StreamingPull,
Seek, snapshots, updates and deletes, IAM policy calls) answers UNIMPLEMENTED, as gRPC does
for a method a server does not have.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import any_pb2
from grpc_status import rpc_status

from skyfleet.lab.pubsub import pb
from skyfleet.lab.pubsub.engine import Engine, ServiceError
from skyfleet.lab.pubsub.iam import DENIED

log = logging.getLogger("skyfleet.lab.pubsub")

# The longest a Pull waits for a first message when its caller set no deadline.
MAX_PULL_WAIT_SECONDS = 10.0
# A Pull answers a share of its caller's deadline early (bounded), so an empty answer still
# arrives in time on a loaded machine: a fixed 50 ms was overrun in CI (DEADLINE_EXCEEDED).
PULL_MARGIN_SHARE = 0.25
PULL_MARGIN_SECONDS = (0.05, 1.0)
TICK_SECONDS = 0.05
WORKERS_PER_LISTENER = 32
MAX_CONCURRENT_RPCS = 256


class Services:
    """The RPC handlers for one listener; ``member`` is None on the main (owner's) port."""

    def __init__(self, engine: Engine, member: str | None) -> None:
        self.engine = engine
        self.member = member

    def _allow(self, context: grpc.ServicerContext, *needs: tuple[str, str]) -> None:
        policy = self.engine.policy
        if self.member is None or policy is None:
            return
        lacking = policy.missing(self.member, needs)
        if lacking is not None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{DENIED} ({lacking})")

    @staticmethod
    def _project(name: str) -> str:
        return "/".join(name.split("/")[:2])

    # Publisher

    def create_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.topics.create", self._project(request.name)))
        return self.engine.create_topic(request)

    def get_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.topics.get", request.topic))
        return self.engine.get_topic(request.topic)

    def list_topics(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.topics.list", request.project))
        return pb.ListTopicsResponse(topics=self.engine.list_topics(request.project))

    def publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.topics.publish", request.topic))
        return pb.PublishResponse(message_ids=self.engine.publish(request.topic, list(request.messages)))

    # Subscriber

    def create_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(
            context,
            ("pubsub.subscriptions.create", self._project(request.name)),
            ("pubsub.topics.attachSubscription", request.topic),
        )
        return self.engine.create_subscription(request)

    def get_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.subscriptions.get", request.subscription))
        return self.engine.get_subscription(request.subscription)

    def list_subscriptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.subscriptions.list", request.project))
        return pb.ListSubscriptionsResponse(subscriptions=self.engine.list_subscriptions(request.project))

    def pull(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.subscriptions.consume", request.subscription))
        remaining = context.time_remaining()
        wait = MAX_PULL_WAIT_SECONDS if remaining is None else min(MAX_PULL_WAIT_SECONDS, remaining)
        if request.return_immediately:
            wait = 0.0
        low, high = PULL_MARGIN_SECONDS
        margin = min(high, max(low, wait * PULL_MARGIN_SHARE))
        context.add_callback(lambda: self.engine.wake(request.subscription))
        received = self.engine.pull(
            request.subscription,
            request.max_messages,
            max(0.0, wait - margin),
            active=context.is_active,
        )
        return pb.PullResponse(received_messages=received)

    def acknowledge(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.subscriptions.consume", request.subscription))
        self.engine.acknowledge(request.subscription, list(request.ack_ids))
        return pb.Empty()

    def modify_ack_deadline(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._allow(context, ("pubsub.subscriptions.consume", request.subscription))
        self.engine.modify_ack_deadline(
            request.subscription, list(request.ack_ids), request.ack_deadline_seconds
        )
        return pb.Empty()

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        def unary(fn: Callable[[Any, grpc.ServicerContext], Any], request_type: Any) -> Any:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return fn(request, context)
                except ServiceError as exc:
                    _abort(context, exc)

            return grpc.unary_unary_rpc_method_handler(
                call,
                request_deserializer=request_type.FromString,
                response_serializer=_serialize,
            )

        publisher = {
            "CreateTopic": unary(self.create_topic, pb.Topic),
            "GetTopic": unary(self.get_topic, pb.GetTopicRequest),
            "ListTopics": unary(self.list_topics, pb.ListTopicsRequest),
            "Publish": unary(self.publish, pb.PublishRequest),
        }
        subscriber = {
            "CreateSubscription": unary(self.create_subscription, pb.Subscription),
            "GetSubscription": unary(self.get_subscription, pb.GetSubscriptionRequest),
            "ListSubscriptions": unary(self.list_subscriptions, pb.ListSubscriptionsRequest),
            "Pull": unary(self.pull, pb.PullRequest),
            "Acknowledge": unary(self.acknowledge, pb.AcknowledgeRequest),
            "ModifyAckDeadline": unary(self.modify_ack_deadline, pb.ModifyAckDeadlineRequest),
        }
        return (
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
        )


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def _abort(context: grpc.ServicerContext, exc: ServiceError) -> None:
    if exc.info is None:
        context.abort(exc.code, exc.message)
    detail = any_pb2.Any()
    detail.Pack(exc.info)
    status = pb.Status(code=exc.code.value[0], message=exc.message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


class Server:
    """The engine behind one gRPC server per listener, plus the housekeeping thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        host: str,
        port: int,
        callers: dict[str, int] | None = None,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
    ) -> None:
        self.engine = engine
        self.host = host
        self.ports: dict[str, int] = {}
        self._servers: list[grpc.Server] = []
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="pubsub-tick", daemon=True)
        for member, wanted in [(None, port), *(callers or {}).items()]:
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=WORKERS_PER_LISTENER, thread_name_prefix="pubsub"),
                maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
                interceptors=list(interceptors),
            )
            server.add_generic_rpc_handlers(Services(engine, member).handlers())
            bound = server.add_insecure_port(f"{host}:{wanted}")
            if bound == 0:
                raise OSError(f"cannot listen on {host}:{wanted}")
            self.ports[member or "main"] = bound
            self._servers.append(server)

    @property
    def port(self) -> int:
        return self.ports["main"]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Server:
        for server in self._servers:
            server.start()
        self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.engine.tick()
            except Exception:  # keep serving; the next tick retries
                log.exception("housekeeping failed")

    def stop(self, grace: float = 0.5) -> None:
        self._stop.set()
        self.engine.close()
        events = [server.stop(grace) for server in self._servers]
        for event in events:
            event.wait()
        if self._ticker.is_alive():
            self._ticker.join(timeout=5)
