"""The app tests' Pub/Sub boundary: the lab's Pub/Sub server, run in the test process.

``skyfleet.lab.pubsub`` is a real gRPC server speaking Google's ``google.pubsub.v1`` protocol
(what it reproduces of the service: ``docs/lab-pubsub.md``); the app's real client library
reaches it through ``PUBSUB_EMULATOR_HOST``. Here it runs without a data folder (nothing
outlives the test session) and without IAM; each test creates its own topics and
subscriptions through the client, as the brokers harness does.

``stall()`` makes the endpoint take calls and never answer them until ``flow()``: a Pub/Sub
front end that accepts connections but whose backend hangs.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from skyfleet.lab.pubsub import Server, build, parse_config


class _Stall(grpc.ServerInterceptor):
    """Holds every call while the endpoint is stalled, counting them by method."""

    def __init__(self) -> None:
        self.flowing = threading.Event()
        self.flowing.set()
        self.held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(handler_call_details.method).rsplit("/", 1)[-1].lower()
        inner = handler.unary_unary

        def held(request: Any, context: grpc.ServicerContext) -> Any:
            if not self.flowing.is_set():
                with self._lock:
                    self.held[method] += 1
                self.flowing.wait()
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            held,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class PubSubServer:
    def __init__(
        self, project: str = "skyfleet-test", interceptors: Sequence[grpc.ServerInterceptor] = ()
    ) -> None:
        self._stall = _Stall()
        self._server: Server = build(
            parse_config({"listen": {"host": "127.0.0.1", "port": 0}, "project": project}),
            interceptors=[*interceptors, self._stall],
        )

    @property
    def host(self) -> str:
        return self._server.address

    @property
    def held(self) -> Counter[str]:
        """Calls taken while stalled, by lower-cased method name (``publish``, ``pull``...)."""
        return self._stall.held

    def start(self) -> PubSubServer:
        self._server.start()
        return self

    def stall(self) -> None:
        self._stall.flowing.clear()

    def flow(self) -> None:
        self._stall.flowing.set()

    def stop(self) -> None:
        self._stall.flowing.set()
        self._server.stop(grace=0)

    def backlog(self, subscription: str) -> int:
        """Messages the subscription still holds (delivered or not), as the service's
        ``num_undelivered_messages`` metric counts them."""
        return self._server.engine.backlog(subscription)
