"""The app tests' Pub/Sub boundary: the lab's Pub/Sub server, run in the test process.

``skyfleet.lab.pubsub`` is a real gRPC server speaking Google's ``google.pubsub.v1`` protocol
(what it reproduces of the service: ``docs/lab-pubsub.md``); the app's real client library
reaches it through ``PUBSUB_EMULATOR_HOST``. Here it runs without a data folder (nothing
outlives the test session) and without IAM; each test creates its own topics and
subscriptions through the client, as the brokers harness does.
"""

from __future__ import annotations

from skyfleet.lab.pubsub import Server, build, parse_config


class PubSubServer:
    def __init__(self, project: str = "skyfleet-test") -> None:
        self._server: Server = build(
            parse_config({"listen": {"host": "127.0.0.1", "port": 0}, "project": project})
        )

    @property
    def host(self) -> str:
        return self._server.address

    def start(self) -> PubSubServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0)

    def backlog(self, subscription: str) -> int:
        """Messages the subscription still holds (delivered or not), as the service's
        ``num_undelivered_messages`` metric counts them."""
        return self._server.engine.backlog(subscription)
