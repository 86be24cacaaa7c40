"""The lab's Pub/Sub server (``python -m skyfleet.lab.pubsub``) as a real process, driven by the
real google-cloud-pubsub client and, where it matters, the app's own adapter
(``agent_app.queues.pubsub_queue.PubSubTaskQueue``).

Service durations run faster than real time (the config's ``time_scale``), so a 10 s ack
deadline lasts 0.2 s here. Timing checks are lower bounds (nothing may come back early);
waits are bounded conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber._protocol.streaming_pull_manager import _get_ack_errors
from google.cloud.pubsub_v1.types import PublisherOptions
from google.pubsub_v1 import types as pst
from google.pubsub_v1.services.publisher import PublisherClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber import SubscriberClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from agent_app.contract import PubSubQueue
from agent_app.queues.base import Delivery
from agent_app.queues.pubsub_queue import PubSubDelivery, PubSubTaskQueue
from skyfleet.lab.errors import LabConfigError
from skyfleet.lab.pubsub import config_from_plan, parse_config
from skyfleet.plan import PlannedResource
from skyfleet.testing.servers import REPO, VENV_BIN, Proc, free_port, wait_until

PROJECT = "skyfleet-lab"
SCALE = 0.02  # 10 service seconds = 0.2 s


class PubSubProcess:
    """``python -m skyfleet.lab.pubsub --config FILE``, restartable on the same ports."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        self.config = config
        self.path = folder / f"pubsub-{uuid.uuid4().hex[:6]}.json"
        self.path.write_text(json.dumps(config))
        self.proc: Proc | None = None
        self.ports: dict[str, int] = {}
        self.recovered = 0

    def start(self) -> PubSubProcess:
        argv = [sys.executable, "-m", "skyfleet.lab.pubsub", "--config", str(self.path)]
        self.proc = Proc("pubsub", argv, cwd=REPO).start()
        ready = wait_until(self._ready, timeout=30, what="the Pub/Sub server's ready line")
        self.ports, self.recovered = ready["ports"], ready["messages"]
        return self

    def _ready(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"pubsub exited: {self.proc.output()}")
        for line in self.proc.output().splitlines():
            if line.startswith('{"event": "ready"'):
                return json.loads(line)
        return None

    def host(self, caller: str = "main") -> str:
        return f"127.0.0.1:{self.ports[caller]}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def server_config(**extra: Any) -> dict[str, Any]:
    return {"listen": {"host": "127.0.0.1", "port": free_port()}, "project": PROJECT, **extra}


@contextlib.contextmanager
def running(config: dict[str, Any], folder: Path) -> Iterator[PubSubProcess]:
    server = PubSubProcess(config, folder).start()
    try:
        yield server
    finally:
        server.stop()


def gapic(host: str) -> tuple[PublisherClient, SubscriberClient]:
    """The client library's generated clients on a plain channel (no retries unless asked)."""
    return (
        PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host))),
        SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(host))),
    )


@contextlib.contextmanager
def emulator_host(host: str) -> Iterator[None]:
    """``PUBSUB_EMULATOR_HOST`` while a client (or the app's adapter) is built."""
    old = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = old


def topic_path(name: str) -> str:
    return f"projects/{PROJECT}/topics/{name}"


def sub_path(name: str) -> str:
    return f"projects/{PROJECT}/subscriptions/{name}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubProcess]:
    """One server for the scenarios that create their own topics and subscriptions."""
    with running(server_config(time_scale=SCALE), tmp_path_factory.mktemp("pubsub")) as s:
        yield s


@pytest.fixture(scope="module")
def clients(server: PubSubProcess) -> tuple[PublisherClient, SubscriberClient]:
    return gapic(server.host())


class Queue:
    """A fresh topic and subscription (with a dead-letter topic and hold subscription if asked)."""

    def __init__(
        self,
        clients: tuple[PublisherClient, SubscriberClient],
        *,
        ack_deadline: int = 600,
        max_attempts: int | None = None,
        backoff: tuple[int, int] | None = None,
        exactly_once: bool = False,
    ) -> None:
        self.pub, self.sub = clients
        name = uuid.uuid4().hex[:8]
        self.topic, self.subscription = topic_path(f"tasks-{name}"), sub_path(f"work-{name}")
        self.pub.create_topic(name=self.topic)
        request = pst.Subscription(
            name=self.subscription,
            topic=self.topic,
            ack_deadline_seconds=ack_deadline,
            enable_exactly_once_delivery=exactly_once,
        )
        if backoff:
            request.retry_policy = pst.RetryPolicy(
                minimum_backoff=f"{backoff[0]}s", maximum_backoff=f"{backoff[1]}s"
            )
        self.dead_topic = self.dead_hold = None
        if max_attempts:
            self.dead_topic, self.dead_hold = topic_path(f"dead-{name}"), sub_path(f"hold-{name}")
            self.pub.create_topic(name=self.dead_topic)
            self.sub.create_subscription(name=self.dead_hold, topic=self.dead_topic)
            request.dead_letter_policy = pst.DeadLetterPolicy(
                dead_letter_topic=self.dead_topic, max_delivery_attempts=max_attempts
            )
        self.sub.create_subscription(request=request)

    def publish(self, *bodies: bytes, **attributes: str) -> list[str]:
        messages = [pst.PubsubMessage(data=b, attributes=attributes) for b in bodies]
        return list(self.pub.publish(topic=self.topic, messages=messages, timeout=10).message_ids)

    def pull(self, wait: float = 5.0, subscription: str | None = None, max_messages: int = 10) -> list[Any]:
        """What a Pull returns, waiting up to ``wait`` s for a first message."""
        try:
            out = self.sub.pull(
                subscription=subscription or self.subscription, max_messages=max_messages, timeout=wait
            )
        except gexc.DeadlineExceeded:
            return []
        return list(out.received_messages)

    def nack(self, *received: Any) -> None:
        self.sub.modify_ack_deadline(
            subscription=self.subscription, ack_ids=[m.ack_id for m in received], ack_deadline_seconds=0
        )

    def ack(self, *received: Any) -> None:
        self.sub.acknowledge(subscription=self.subscription, ack_ids=[m.ack_id for m in received])


# --- delivery ---------------------------------------------------------------------------------


def test_publish_pull_ack(clients: tuple[PublisherClient, SubscriberClient]) -> None:
    q = Queue(clients)
    ids = q.publish(b"one", b"two", b"three", origin="test")
    assert len(set(ids)) == 3
    got = q.pull()
    assert sorted(m.message.message_id for m in got) == sorted(ids)
    assert sorted(bytes(m.message.data) for m in got) == [b"one", b"three", b"two"]
    assert all(dict(m.message.attributes) == {"origin": "test"} for m in got)
    assert all(m.message.publish_time.timestamp() > 0 for m in got)
    assert all(m.delivery_attempt == 0 for m in got)  # no dead-letter policy: not tracked
    q.ack(*got)
    assert q.pull(wait=1.0) == []


def test_pull_returns_at_most_max_messages(clients: tuple[PublisherClient, SubscriberClient]) -> None:
    q = Queue(clients)
    q.publish(*[f"m{i}".encode() for i in range(5)])
    first = q.pull(max_messages=2)
    assert len(first) == 2
    rest = q.pull(max_messages=10)
    assert len(rest) == 3
    assert {m.message.message_id for m in first}.isdisjoint(m.message.message_id for m in rest)


def test_a_pull_whose_caller_went_away_takes_no_message(
    server: PubSubProcess, clients: tuple[PublisherClient, SubscriberClient]
) -> None:
    q = Queue(clients)  # ack deadline 600 s (12 s)
    channel = grpc.insecure_channel(server.host())
    pull = channel.unary_unary(
        "/google.pubsub.v1.Subscriber/Pull",
        request_serializer=pst.PullRequest.serialize,
        response_deserializer=pst.PullResponse.deserialize,
    )
    waiting = pull.future(pst.PullRequest(subscription=q.subscription, max_messages=1), timeout=10)
    waiting.cancel()
    q.publish(b"for whoever is still there")
    (m,) = q.pull(wait=5)  # not leased to the caller that left
    assert bytes(m.message.data) == b"for whoever is still there"
    channel.close()


def test_lapsed_ack_deadline_redelivers_and_counts_an_attempt(
    clients: tuple[PublisherClient, SubscriberClient],
) -> None:
    q = Queue(clients, ack_deadline=10, max_attempts=5)  # 0.2 s
    q.publish(b"slow")
    pulled_at = time.monotonic()
    (first,) = q.pull()
    assert first.delivery_attempt == 1
    (again,) = q.pull()
    assert time.monotonic() - pulled_at >= 10 * SCALE  # not before its deadline
    assert again.message.message_id == first.message.message_id
    assert again.ack_id != first.ack_id
    assert again.delivery_attempt == 2


def test_late_ack_still_acks_on_an_at_least_once_subscription(
    clients: tuple[PublisherClient, SubscriberClient],
) -> None:
    q = Queue(clients, ack_deadline=10)
    q.publish(b"late")
    (m,) = q.pull()
    lapsed = time.monotonic() + 10 * SCALE
    wait_until(lambda: time.monotonic() > lapsed, what="the ack deadline to lapse")
    q.ack(m)  # after the deadline, before anyone pulled it again
    assert q.pull(wait=1.0) == []


def test_modify_ack_deadline_extends_the_lease(clients: tuple[PublisherClient, SubscriberClient]) -> None:
    q = Queue(clients, ack_deadline=10, max_attempts=5)
    q.publish(b"long task")
    (m,) = q.pull()
    extended_at = time.monotonic()
    q.sub.modify_ack_deadline(subscription=q.subscription, ack_ids=[m.ack_id], ack_deadline_seconds=100)
    (again,) = q.pull(wait=15)
    assert time.monotonic() - extended_at >= 100 * SCALE  # held for the extension, not 10 s
    assert again.delivery_attempt == 2


def test_nack_redelivers_after_the_retry_policys_backoff(
    clients: tuple[PublisherClient, SubscriberClient],
) -> None:
    q = Queue(clients, max_attempts=10, backoff=(10, 40))  # 0.2 s doubling to 0.8 s
    q.publish(b"flaky")
    (m,) = q.pull()
    for attempt, backoff in enumerate([10, 20, 40, 40], start=1):
        assert m.delivery_attempt == attempt
        nacked_at = time.monotonic()
        q.nack(m)
        (m,) = q.pull(wait=10)
        assert time.monotonic() - nacked_at >= backoff * SCALE, f"attempt {attempt + 1} came back early"


def test_dead_letter_after_max_delivery_attempts(clients: tuple[PublisherClient, SubscriberClient]) -> None:
    q = Queue(clients, max_attempts=5)
    (source_id,) = q.publish(b"poison", kind="task")
    attempts, source_time = [], ""
    for _ in range(5):
        (m,) = q.pull()
        attempts.append(m.delivery_attempt)
        source_time = m.message.publish_time.isoformat()
        q.nack(m)
    assert attempts == [1, 2, 3, 4, 5]
    (letter,) = wait_until(lambda: q.pull(subscription=q.dead_hold, wait=1.0), what="the dead letter")
    assert bytes(letter.message.data) == b"poison"
    assert letter.message.message_id != source_id
    attrs = dict(letter.message.attributes)
    assert attrs["kind"] == "task"
    assert attrs["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert attrs["CloudPubSubDeadLetterSourceSubscription"] == q.subscription.split("/")[-1]
    assert attrs["CloudPubSubDeadLetterSourceSubscriptionProject"] == PROJECT
    assert attrs["CloudPubSubDeadLetterSourceTopicPublishTime"][:19] == source_time[:19]
    assert q.pull(wait=1.0) == []  # gone from the source subscription


def test_the_apps_adapter_reads_its_attempts_and_dead_letters_to_the_policys_topic(
    server: PubSubProcess, clients: tuple[PublisherClient, SubscriberClient]
) -> None:
    """Five deliveries in the policy: four runs, and one kept for a worker lost during the last
    (agent_app.queues.base). A dead letter goes to the policy's topic at once, whatever its
    attempt, with its attributes and the reason."""
    q = Queue(clients, max_attempts=5)

    async def scenario() -> list[tuple[int, int | None]]:
        with emulator_host(server.host()):
            queue = PubSubTaskQueue(
                PubSubQueue(PROJECT, q.topic.split("/")[-1], q.subscription.split("/")[-1]), lease_seconds=30
            )
            await queue.start(consume=True)
        try:
            assert queue.max_attempts == 4  # from GetSubscription's dead-letter policy
            await queue.publish(b'{"task": "poison"}', task_id="t-1")
            seen = []
            for _ in range(1):
                deliveries = []
                for _ in range(50):
                    deliveries = await queue.receive(1, wait_seconds=0.5)
                    if deliveries:
                        break
                (d,) = deliveries
                seen.append((d.attempt, d.max_attempts))
                await d.dead_letter("poison")
            return seen
        finally:
            await queue.close()

    assert asyncio.run(scenario()) == [(1, 4)]
    (letter,) = wait_until(lambda: q.pull(subscription=q.dead_hold, wait=1.0), what="the dead letter")
    assert bytes(letter.message.data) == b'{"task": "poison"}'
    assert dict(letter.message.attributes) == {
        "task_id": "t-1",
        "Skyfleet-Reason": "poison",
        "Skyfleet-Attempts": "1",
    }
    assert q.pull(wait=1.0) == []  # gone from the source subscription


def test_exactly_once_refuses_a_lapsed_ack_id_as_the_client_library_expects(
    clients: tuple[PublisherClient, SubscriberClient],
) -> None:
    q = Queue(clients, ack_deadline=60, exactly_once=True)
    q.publish(b"once")
    (m,) = q.pull()
    q.sub.modify_ack_deadline(subscription=q.subscription, ack_ids=[m.ack_id], ack_deadline_seconds=1)
    (again,) = q.pull()  # the 1 s (0.02 s) lease lapsed
    with pytest.raises(gexc.InvalidArgument) as late:
        q.ack(m)
    assert _get_ack_errors(late.value) == {m.ack_id: "PERMANENT_FAILURE_INVALID_ACK_ID"}
    q.ack(again)
    with pytest.raises(gexc.InvalidArgument) as twice:
        q.ack(again)
    assert _get_ack_errors(twice.value) == {again.ack_id: "PERMANENT_FAILURE_INVALID_ACK_ID"}
    assert q.pull(wait=1.0) == []


def test_errors_carry_the_services_status_codes(clients: tuple[PublisherClient, SubscriberClient]) -> None:
    pub, sub = clients
    q = Queue(clients)
    with pytest.raises(gexc.NotFound):
        pub.get_topic(topic=topic_path("no-such-topic"))
    with pytest.raises(gexc.NotFound):
        sub.get_subscription(subscription=sub_path("no-such-sub"))
    with pytest.raises(gexc.NotFound):
        pub.publish(topic=topic_path("no-such-topic"), messages=[pst.PubsubMessage(data=b"x")])
    with pytest.raises(gexc.NotFound):
        sub.pull(subscription=sub_path("no-such-sub"), max_messages=1, timeout=2)
    with pytest.raises(gexc.AlreadyExists):
        pub.create_topic(name=q.topic)
    with pytest.raises(gexc.InvalidArgument, match="ack_deadline_seconds must be between 10 and 600"):
        sub.create_subscription(
            name=sub_path(f"short-{uuid.uuid4().hex[:6]}"), topic=q.topic, ack_deadline_seconds=5
        )
    with pytest.raises(gexc.InvalidArgument, match="max_delivery_attempts must be between 5 and 100"):
        sub.create_subscription(
            request=pst.Subscription(
                name=sub_path(f"dl-{uuid.uuid4().hex[:6]}"),
                topic=q.topic,
                dead_letter_policy=pst.DeadLetterPolicy(dead_letter_topic=q.topic, max_delivery_attempts=3),
            )
        )
    with pytest.raises(gexc.InvalidArgument):
        sub.modify_ack_deadline(subscription=q.subscription, ack_ids=["x"], ack_deadline_seconds=601)
    with pytest.raises(gexc.InvalidArgument, match="invalid ack ID"):
        sub.acknowledge(subscription=q.subscription, ack_ids=["not-an-ack-id"])
    with pytest.raises(gexc.InvalidArgument):
        sub.pull(subscription=q.subscription, max_messages=0, timeout=2)
    with pytest.raises(gexc.InvalidArgument, match="non-empty data field or at least one attribute"):
        pub.publish(topic=q.topic, messages=[pst.PubsubMessage()])
    with pytest.raises(gexc.MethodNotImplemented):
        pub.delete_topic(topic=q.topic)


# --- retention and memory ---------------------------------------------------------------------


def test_retention_drops_unacked_messages_the_longer_of_subscription_and_topic_retention(
    tmp_path: Path,
) -> None:
    scale = 0.005  # Pub/Sub's 10-minute minimum is 3 s
    config = server_config(
        time_scale=scale,
        topics=[{"name": "plain"}, {"name": "kept", "message_retention_seconds": 1200}],
        subscriptions=[
            {"name": "plain-sub", "topic": "plain", "message_retention_seconds": 600},
            {"name": "kept-sub", "topic": "kept", "message_retention_seconds": 600},
        ],
    )
    with running(config, tmp_path) as server:
        pub, sub = gapic(server.host())
        plain = sub.get_subscription(subscription=sub_path("kept-sub"))
        assert plain.topic_message_retention_duration.seconds == 1200

        def present(name: str) -> bool:
            try:
                out = sub.pull(subscription=sub_path(name), max_messages=1, timeout=0.5)
            except gexc.DeadlineExceeded:
                return False
            return bool(out.received_messages)  # leased for 10 s (0.05 s), then back

        published_at = time.monotonic()
        for topic in ("plain", "kept"):
            pub.publish(topic=topic_path(topic), messages=[pst.PubsubMessage(data=b"old")])
        wait_until(lambda: not present("plain-sub"), timeout=30, what="the plain message to expire")
        assert time.monotonic() - published_at >= 600 * scale
        assert present("kept-sub")  # the topic's 20 minutes (6 s) hold it longer
        wait_until(lambda: not present("kept-sub"), timeout=30, what="the kept message to expire")
        assert time.monotonic() - published_at >= 1200 * scale
        pub.publish(topic=topic_path("plain"), messages=[pst.PubsubMessage(data=b"new")])
        assert present("plain-sub")  # retention counts from each message's publish time


def test_backlog_is_bounded_and_frees_on_ack(tmp_path: Path) -> None:
    config = server_config(
        max_backlog_bytes=1024 * 1024,
        topics=[{"name": "tasks"}],
        subscriptions=[{"name": "work", "topic": "tasks"}],
    )
    with running(config, tmp_path) as server:
        pub, sub = gapic(server.host())
        body = b"x" * 400_000
        pub.publish(topic=topic_path("tasks"), messages=[pst.PubsubMessage(data=body)] * 2, retry=None)
        with pytest.raises(gexc.ResourceExhausted, match="backlog is full"):
            pub.publish(topic=topic_path("tasks"), messages=[pst.PubsubMessage(data=body)], retry=None)
        got = sub.pull(subscription=sub_path("work"), max_messages=10, timeout=5).received_messages
        sub.acknowledge(subscription=sub_path("work"), ack_ids=[m.ack_id for m in got])
        pub.publish(topic=topic_path("tasks"), messages=[pst.PubsubMessage(data=body)], retry=None)


# --- restarts ---------------------------------------------------------------------------------


def test_kill_9_loses_no_acknowledged_publish_nor_ack(tmp_path: Path) -> None:
    """A publisher streams messages while a consumer pulls and acks them; the server is killed
    (SIGKILL) mid-stream and restarted on the same data folder. Every publish the client
    library saw succeed is delivered afterwards; no message whose ack was answered before the
    kill comes back; an ack id handed out before the crash still acks after it. The journal
    is compacted while all this runs (threshold 16 KiB)."""
    scale = 0.1  # a 10 s ack deadline lasts 1 s: a lost ack costs a second, not ten
    config = server_config(
        data_dir=str(tmp_path / "data"),
        time_scale=scale,
        compact_journal_above_bytes=16 * 1024,
        topics=[{"name": "tasks"}],
        subscriptions=[{"name": "work", "topic": "tasks", "ack_deadline_seconds": 10}],
    )
    server = PubSubProcess(config, tmp_path).start()
    work, tasks = sub_path("work"), topic_path("tasks")
    try:
        # The client library's publisher (batching, retries), with a retry that gives up its
        # backoff quickly: the library's default grows to 60 s between tries.
        retry = Retry(
            predicate=if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.Unknown),
            initial=0.05,
            maximum=0.5,
            multiplier=1.5,
            timeout=60,
        )
        with emulator_host(server.host()):
            publisher = pubsub_v1.PublisherClient(publisher_options=PublisherOptions(retry=retry, timeout=5))
        pub, sub = gapic(server.host())

        pub.publish(topic=tasks, messages=[pst.PubsubMessage(data=f"held-{i}".encode()) for i in range(10)])
        held = list(sub.pull(subscription=work, max_messages=10, timeout=5).received_messages)
        assert len(held) == 10
        sub.modify_ack_deadline(subscription=work, ack_ids=[m.ack_id for m in held], ack_deadline_seconds=600)

        sent: dict[bytes, futures.Future[str]] = {}
        received: list[tuple[float, bytes]] = []
        acked: list[tuple[float, bytes]] = []  # when the ack's answer arrived
        stop = threading.Event()

        def produce() -> None:
            for i in range(600):
                body = f"stream-{i}-".encode() + b"." * 500
                sent[body] = publisher.publish(tasks, body)
                time.sleep(0.002)  # pacing the load, not waiting for a condition

        def consume() -> None:
            _, consumer = gapic(server.host())
            while not stop.is_set():
                try:
                    batch = consumer.pull(subscription=work, max_messages=50, timeout=1, retry=None)
                    messages = list(batch.received_messages)
                    received.extend((time.monotonic(), bytes(m.message.data)) for m in messages)
                    if messages:
                        consumer.acknowledge(
                            subscription=work, ack_ids=[m.ack_id for m in messages], retry=None
                        )
                        acked.extend((time.monotonic(), bytes(m.message.data)) for m in messages)
                except gexc.GoogleAPICallError:
                    time.sleep(0.05)  # the server is down; try again

        producer, consumer = threading.Thread(target=produce), threading.Thread(target=consume)
        producer.start()
        consumer.start()
        wait_until(
            lambda: sum(f.done() for f in list(sent.values())) >= 150, what="150 acknowledged publishes"
        )
        wait_until(lambda: len(acked) >= 50, what="50 acks")
        server.kill()
        killed_at = time.monotonic()
        server.start()
        restarted_at = time.monotonic()
        producer.join(timeout=60)
        futures.wait(list(sent.values()), timeout=90)
        confirmed = {body for body, f in sent.items() if f.done() and f.exception() is None}
        assert len(confirmed) >= 150

        def all_delivered() -> bool:
            return confirmed <= {body for _, body in received}

        try:
            wait_until(all_delivered, timeout=60, what="every acknowledged publish to be delivered")
        finally:
            stop.set()
            consumer.join(timeout=10)
        acked_before_kill = {body for t, body in acked if t < killed_at}
        after_restart = [body for t, body in received if t > restarted_at]
        assert not acked_before_kill & set(after_restart), "messages acked before the kill came back"
        assert len(acked_before_kill) >= 50

        # An ack id from before the crash still acks: its lease survived the restart.
        sub.acknowledge(subscription=work, ack_ids=[m.ack_id for m in held])
        sub.modify_ack_deadline(subscription=work, ack_ids=[m.ack_id for m in held], ack_deadline_seconds=0)
        assert not sub.pull(subscription=work, max_messages=10, timeout=2).received_messages
        assert not any(body.startswith(b"held-") for _, body in received)
        # 600 messages of 500 bytes went through; the journal keeps only what is live.
        assert (tmp_path / "data" / "journal").stat().st_size < 100 * 1024
    finally:
        server.stop()


def with_dead_letters(**extra: Any) -> dict[str, Any]:
    """Topic "tasks", subscription "work" (ack deadline 600 s = 12 s, dead letters to "dead"
    after 5 attempts) and "hold" on "dead"."""
    return server_config(
        time_scale=SCALE,
        topics=[{"name": "tasks"}, {"name": "dead"}],
        subscriptions=[
            {
                "name": "work",
                "topic": "tasks",
                "ack_deadline_seconds": 600,
                "dead_letter_policy": {"dead_letter_topic": "dead", "max_delivery_attempts": 5},
            },
            {"name": "hold", "topic": "dead"},
        ],
        **extra,
    )


def test_restart_keeps_delivery_attempts_and_dead_letters(tmp_path: Path) -> None:
    server = PubSubProcess(with_dead_letters(data_dir=str(tmp_path / "data")), tmp_path).start()
    try:
        pub, sub = gapic(server.host())
        pub.publish(topic=topic_path("tasks"), messages=[pst.PubsubMessage(data=b"poison")])
        for attempt in (1, 2, 3):
            (m,) = sub.pull(subscription=sub_path("work"), max_messages=1, timeout=5).received_messages
            assert m.delivery_attempt == attempt
            sub.modify_ack_deadline(subscription=sub_path("work"), ack_ids=[m.ack_id], ack_deadline_seconds=0)
        server.kill()
        server.start()
        assert server.recovered == 1
        pub, sub = gapic(server.host())
        for attempt in (4, 5):
            (m,) = sub.pull(subscription=sub_path("work"), max_messages=1, timeout=5).received_messages
            assert m.delivery_attempt == attempt
            sub.modify_ack_deadline(subscription=sub_path("work"), ack_ids=[m.ack_id], ack_deadline_seconds=0)
        (letter,) = sub.pull(subscription=sub_path("hold"), max_messages=1, timeout=5).received_messages
        assert dict(letter.message.attributes)["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    finally:
        server.stop()


def test_a_lease_and_its_ack_id_survive_a_restart(tmp_path: Path) -> None:
    server = PubSubProcess(with_dead_letters(data_dir=str(tmp_path / "data")), tmp_path).start()
    try:
        pub, sub = gapic(server.host())
        pub.publish(topic=topic_path("tasks"), messages=[pst.PubsubMessage(data=b"in progress")])
        (m,) = sub.pull(subscription=sub_path("work"), max_messages=1, timeout=5).received_messages
        server.kill()
        server.start()
        pub, sub = gapic(server.host())
        assert not sub.pull(subscription=sub_path("work"), max_messages=1, timeout=1).received_messages
        # The old ack id still names the delivery: releasing it makes the message available.
        sub.modify_ack_deadline(subscription=sub_path("work"), ack_ids=[m.ack_id], ack_deadline_seconds=0)
        (again,) = sub.pull(subscription=sub_path("work"), max_messages=1, timeout=5).received_messages
        assert again.delivery_attempt == 2
        sub.acknowledge(subscription=sub_path("work"), ack_ids=[again.ack_id])
    finally:
        server.stop()


# --- configuration from the plan, IAM ---------------------------------------------------------


@pytest.fixture(scope="module")
def gcp_prod_plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("plans")
    subprocess.run(
        [str(VENV_BIN / "skyfleet"), "plan", "--stack", "gcp-prod", "--out", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return json.loads((out / "gcp-prod.json").read_text())


def as_duration(value: Any) -> str:
    """A duration the client returns (a timedelta) as the plan writes it ("600s")."""
    return f"{value.total_seconds():.0f}s"


def _planned(plan: dict[str, Any], typ: str, name: str) -> dict[str, Any]:
    (r,) = [r for r in plan["resources"] if r["type"] == typ and r["name"] == name]
    return r


def test_config_from_the_gcp_prod_plan_reproduces_its_pubsub_and_grants(
    gcp_prod_plan: dict[str, Any], tmp_path: Path
) -> None:
    plan = gcp_prod_plan
    api = _planned(plan, "gcp:serviceaccount/account:Account", "api-sa")["outputs"]["member"]
    worker = _planned(plan, "gcp:serviceaccount/account:Account", "worker-sa")["outputs"]["member"]
    ports = {api: free_port(), worker: free_port()}
    config = config_from_plan(plan["resources"], port=free_port(), data_dir=tmp_path / "data", callers=ports)
    # The same config from the PlannedResource objects a plan holds in memory.
    objects = [PlannedResource(**r) for r in plan["resources"]]
    assert (
        config_from_plan(objects, port=config["listen"]["port"], data_dir=tmp_path / "data", callers=ports)
        == config
    )

    planned_sub = _planned(plan, "gcp:pubsub/subscription:Subscription", "tasks-worker")["inputs"]
    planned_topic = _planned(plan, "gcp:pubsub/topic:Topic", "tasks")["inputs"]
    project = planned_sub["project"]
    sub_name = f"projects/{project}/subscriptions/{planned_sub['name']}"
    topic_name = f"projects/{project}/topics/{planned_topic['name']}"

    with running(config, tmp_path) as server:
        _, owner = gapic(server.host())
        got = owner.get_subscription(subscription=sub_name)
        assert got.topic == planned_sub["topic"] == topic_name
        assert got.ack_deadline_seconds == planned_sub["ackDeadlineSeconds"]
        assert as_duration(got.message_retention_duration) == planned_sub["messageRetentionDuration"]
        assert as_duration(got.retry_policy.minimum_backoff) == planned_sub["retryPolicy"]["minimumBackoff"]
        assert as_duration(got.retry_policy.maximum_backoff) == planned_sub["retryPolicy"]["maximumBackoff"]
        assert got.dead_letter_policy.dead_letter_topic == planned_sub["deadLetterPolicy"]["deadLetterTopic"]
        assert (
            got.dead_letter_policy.max_delivery_attempts
            == planned_sub["deadLetterPolicy"]["maxDeliveryAttempts"]
        )
        assert got.enable_exactly_once_delivery is planned_sub["enableExactlyOnceDelivery"]
        hold = _planned(plan, "gcp:pubsub/subscription:Subscription", "tasks-dead-letter-hold")["inputs"]
        assert (
            owner.get_subscription(subscription=f"projects/{project}/subscriptions/{hold['name']}").topic
            == (hold["topic"])
        )

        api_pub, api_sub = gapic(server.host(api))
        worker_pub, worker_sub = gapic(server.host(worker))
        api_pub.get_topic(topic=topic_name)  # roles/pubsub.viewer on the topic
        with pytest.raises(gexc.PermissionDenied, match=r"pubsub\.subscriptions\.consume"):
            api_sub.pull(subscription=sub_name, max_messages=1, timeout=2)
        with pytest.raises(gexc.PermissionDenied):
            api_sub.get_subscription(subscription=sub_name)
        with pytest.raises(gexc.PermissionDenied, match=r"pubsub\.topics\.get"):
            worker_pub.get_topic(topic=topic_name)  # it publishes copies there, nothing more
        with pytest.raises(gexc.PermissionDenied):
            worker_sub.create_subscription(name=f"projects/{project}/subscriptions/sneaky", topic=topic_name)

        async def through_the_app() -> bytes:
            target = PubSubQueue(project, planned_topic["name"], planned_sub["name"])
            with emulator_host(server.host(api)):
                producer = PubSubTaskQueue(target, lease_seconds=30)
                await producer.start(consume=False)
            with emulator_host(server.host(worker)):
                consumer = PubSubTaskQueue(target, lease_seconds=30)
                await consumer.start(consume=True)
            try:
                await producer.check()  # the api's readiness check: GetTopic
                await consumer.check()  # the worker's: GetSubscription
                assert consumer.max_attempts == 5
                await producer.publish(b"hello from the api", task_id="t-9")

                async def received() -> Delivery:
                    for _ in range(50):
                        if deliveries := await consumer.receive(1, wait_seconds=0.5):
                            return deliveries[0]
                    raise AssertionError("the worker received nothing")

                first = await received()
                # Handed back on shutdown: the worker publishes a copy to the task topic (its
                # roles/pubsub.publisher there), which comes back at the same attempt.
                await first.send_copy()
                await first.ack()
                copy = await received()
                assert isinstance(copy, PubSubDelivery)
                await copy.ack()
                assert (copy.attempt, copy.attributes["task_id"]) == (first.attempt, "t-9")
                return copy.body
            finally:
                await producer.close()
                await consumer.close()

        assert asyncio.run(through_the_app()) == b"hello from the api"


def test_without_the_service_agents_grants_nothing_is_dead_lettered(tmp_path: Path) -> None:
    agent = "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com"
    # The agent may publish dead letters but not remove them from "work".
    grant = {"resource": "topics/dead", "role": "roles/pubsub.publisher", "member": agent}
    config = with_dead_letters(iam={"service_agent": agent, "grants": [grant]})
    with running(config, tmp_path) as server:
        pub, sub = gapic(server.host())
        pub.publish(topic=topic_path("tasks"), messages=[pst.PubsubMessage(data=b"stuck")])
        for attempt in range(1, 7):
            (m,) = sub.pull(subscription=sub_path("work"), max_messages=1, timeout=5).received_messages
            assert m.delivery_attempt == attempt
            sub.modify_ack_deadline(subscription=sub_path("work"), ack_ids=[m.ack_id], ack_deadline_seconds=0)
        assert not sub.pull(subscription=sub_path("hold"), max_messages=1, timeout=1).received_messages


def test_bad_config_exits_2_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            server_config(
                topics=[{"name": "tasks"}],
                subscriptions=[{"name": "work", "topic": "tasks", "ack_deadline_seconds": 5}],
            )
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "skyfleet.lab.pubsub", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "subscriptions[0] (work): ack_deadline_seconds must be between 10 and 600 (got 5)" in result.stderr

    with pytest.raises(LabConfigError, match=r"subscriptions\.0\.ack_deadline_secs: Extra inputs"):
        parse_config(
            {**server_config(), "subscriptions": [{"name": "w", "topic": "t", "ack_deadline_secs": 5}]}
        )


def test_sigterm_stops_the_server(tmp_path: Path) -> None:
    server = PubSubProcess(server_config(topics=[{"name": "tasks"}]), tmp_path).start()
    assert server.proc is not None
    server.proc.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
