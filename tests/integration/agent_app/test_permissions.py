"""The permission tables (agent_app/queues/permissions.py) against the most faithful servers:

- SQS: moto's server with IAM enforcement on. One IAM user per role whose only policy is the
  table's actions on the queue runs the real adapter's calls; a user missing any one action
  fails exactly the call that needs it, with AccessDenied.
- Pub/Sub: the gRPC test server records every RPC the real adapter makes, per role and phase;
  the recorded set equals the table's.
- NATS: a real nats-server whose users get exactly :func:`nats_permissions`; each role's real
  adapter calls succeed, and removing any one subject fails the phase that needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_app.contract import NatsQueue, PubSubQueue, SqsQueue
from agent_app.queues import permissions as perm
from agent_app.queues.base import Delivery, QueueTimeout, TaskQueue
from skyfleet.testing.servers import NATS_SERVER, MotoServer, Proc, free_port, port_open, wait_until
from tests.support.pubsub_server import PubSubServer

STREAM, SUBJECT, DLQ_SUBJECT = "PERM_TASKS", "perm.tasks", "perm.tasks.dlq"
LEASE = 30
SEEDED = 4  # the messages a worker's work phase takes: ack, release, dead-letter, requeue
NO_ANSWER_ATTEMPTS = 3


# --- one scenario, phase by phase, for any adapter ------------------------------------------


async def run_phases(queue: TaskQueue, role: str, *, stop_at_failure: bool = True) -> dict[str, str]:
    """Drive the real adapter through start, readiness and work as ``role`` does; the error of
    each phase that failed (empty dict: everything worked)."""
    failed: dict[str, str] = {}

    async def phase(name: str, step: Callable[[], Awaitable[object]]) -> bool:
        attempt = 1
        while True:
            try:
                await step()
                return True
            except QueueTimeout as exc:
                # The app's own bound ran out (a loaded CI machine can keep the server from
                # answering in time): start and readiness change nothing on the broker, so they
                # are asked again, a bounded number of times (a refusal that shows as silence,
                # as NATS's can, is recorded all the same, only later).
                if name != "work" and attempt < NO_ANSWER_ATTEMPTS:
                    attempt += 1
                    continue
                failed[name] = f"{type(exc).__name__}: {exc}"
                return False
            except Exception as exc:  # the broker's refusal, in whatever form the client raises it
                failed[name] = f"{type(exc).__name__}: {exc}"
                return False

    async def work() -> None:
        if role == "api":
            await queue.publish(b'{"task": 1}', task_id="t-1")
            return
        deliveries: list[Delivery] = []
        for _ in range(5):  # bounded: the tasks were published before the worker started
            deliveries += await queue.receive(SEEDED - len(deliveries), 1.0)
            if len(deliveries) >= SEEDED:
                break
        assert len(deliveries) >= SEEDED, f"received {len(deliveries)} of {SEEDED} tasks"
        first, second, third, fourth = deliveries[:SEEDED]
        await first.extend(LEASE)
        await first.ack()
        await second.release(0)
        await third.dead_letter("permissions test")
        await fourth.send_copy()  # handed back on shutdown: a copy, then the ack
        await fourth.ack()

    try:
        for name, step in (
            ("start", lambda: queue.start(consume=role == "worker")),
            ("readiness", queue.check),
            ("work", work),
        ):
            if not await phase(name, step) and stop_at_failure:
                break
    finally:
        with contextlib.suppress(Exception):  # a half-open client may fail to close; not under test
            await queue.close()
    return failed


# --- NATS ----------------------------------------------------------------------------------


@dataclass
class NatsAuthServer:
    """nats-server with JetStream and one NATS user per entry of ``users`` (name -> permissions)."""

    users: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nats-perm-"))
        self.proc: Proc | None = None

    def config(self) -> str:
        # nats.conf accepts JSON values, so the allow lists render as they are.
        users = [{"user": u, "password": f"pw-{u}", "permissions": p} for u, p in self.users.items()]
        return (
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.dir}/js" }}\n'
            f"authorization: {json.dumps({'users': users}, indent=1)}\n"
        )

    def start(self) -> NatsAuthServer:
        conf = self.dir / "nats.conf"
        conf.write_text(self.config())
        self.proc = Proc("nats-perm", [NATS_SERVER, "-c", str(conf)]).start()
        wait_until(lambda: port_open(self.port), what=f"nats-server on {self.port}")
        return self

    def target(self, user: str) -> NatsQueue:
        return NatsQueue(
            servers=(f"nats://{user}:pw-{user}@127.0.0.1:{self.port}",),
            stream=STREAM,
            subject=SUBJECT,
            dlq_subject=DLQ_SUBJECT,
            max_deliver=5,
        )

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _without(permissions: dict[str, Any], direction: str, subject: str) -> dict[str, Any]:
    out = json.loads(json.dumps(permissions))
    out[direction]["allow"].remove(subject)
    # An empty allow list means "no restriction" to nats-server: keep the list restrictive.
    out[direction]["allow"] = out[direction]["allow"] or ["_NOTHING_ALLOWED"]
    return out


TABLE = perm.nats_permissions(STREAM, SUBJECT, DLQ_SUBJECT)
NATS_NEEDS = perm.nats_needs(STREAM, SUBJECT, DLQ_SUBJECT)
# One user per role with exactly the table, and one per (role, subject) with that subject removed.
REMOVALS = [
    (role, direction, subject)
    for role in perm.ROLES
    for direction in ("publish", "subscribe")
    for subject in TABLE[role][direction]["allow"]
]


def _removal_user(role: str, index: int) -> str:
    return f"{role}-minus-{index}"


@pytest.fixture(scope="module")
def nats_auth() -> Iterator[NatsAuthServer]:
    users: dict[str, dict[str, Any]] = {name: TABLE[name] for name in ("api", "worker", "streams")}
    for i, (role, direction, subject) in enumerate(REMOVALS):
        users[_removal_user(role, i)] = _without(TABLE[role], direction, subject)
    server = NatsAuthServer(users).start()
    yield server
    server.stop()


async def _create_streams_as(server: NatsAuthServer, user: str) -> None:
    """What the setup Job does, as the ``streams`` user: create both streams (idempotently)."""
    import nats
    from nats.js.api import RetentionPolicy, StreamConfig

    nc = await nats.connect(servers=[server.target(user).servers[0]], connect_timeout=2)
    try:
        js = nc.jetstream(timeout=3)
        await js.account_info()
        for name, subject, retention in (
            (STREAM, SUBJECT, RetentionPolicy.WORK_QUEUE),
            (perm.nats_dlq_stream(STREAM), DLQ_SUBJECT, RetentionPolicy.LIMITS),
        ):
            config = StreamConfig(name=name, subjects=[subject], retention=retention)
            await js.add_stream(config)
            await js.update_stream(config)
            await js.stream_info(name)
    finally:
        await nc.close()


async def _publish_tasks(server: NatsAuthServer, count: int) -> None:
    from agent_app.queues.nats_queue import NatsTaskQueue

    queue = NatsTaskQueue(server.target("api"), lease_seconds=LEASE, ca_file=None)
    await queue.start(consume=False)
    try:
        for i in range(count):
            await queue.publish(b'{"task": 1}', task_id=f"seed-{i}-{id(queue)}")
    finally:
        await queue.close()


def test_nats_consumer_and_dlq_stream_match_the_adapter() -> None:
    from agent_app.queues.nats_queue import CONSUMER, NatsTaskQueue

    queue = NatsTaskQueue(
        NatsQueue(("nats://h:4222",), STREAM, SUBJECT, DLQ_SUBJECT, 5), lease_seconds=5, ca_file=None
    )
    assert perm.NATS_CONSUMER == CONSUMER
    assert perm.nats_dlq_stream(STREAM) == queue.dlq_stream


async def test_nats_each_role_works_with_exactly_its_allow_lists(nats_auth: NatsAuthServer) -> None:
    from agent_app.queues.nats_queue import NatsTaskQueue

    await _create_streams_as(nats_auth, "streams")
    api_failed = await run_phases(
        NatsTaskQueue(nats_auth.target("api"), lease_seconds=LEASE, ca_file=None), "api"
    )
    assert api_failed == {}
    await _publish_tasks(nats_auth, SEEDED)
    worker = NatsTaskQueue(nats_auth.target("worker"), lease_seconds=LEASE, ca_file=None)
    assert await run_phases(worker, "worker") == {}


async def test_nats_removing_any_subject_fails_the_phase_that_needs_it(nats_auth: NatsAuthServer) -> None:
    from agent_app.queues.nats_queue import NatsTaskQueue

    await _create_streams_as(nats_auth, "streams")
    worker_removals = sum(1 for role, _, _ in REMOVALS if role == "worker")
    await _publish_tasks(nats_auth, SEEDED * worker_removals)

    async def case(i: int, role: str) -> dict[str, str]:
        queue = NatsTaskQueue(nats_auth.target(_removal_user(role, i)), lease_seconds=LEASE, ca_file=None)
        return await run_phases(queue, role)

    results = await asyncio.gather(*(case(i, role) for i, (role, _, _) in enumerate(REMOVALS)))
    wrong = []
    for (role, direction, subject), failed in zip(REMOVALS, results, strict=True):
        phases = {
            n.phase
            for n in NATS_NEEDS
            if n.role == role and n.resource == subject and n.permission == direction
        }
        first = min(phases, key=perm.PHASES.index)
        if list(failed) != [first]:
            wrong.append(f"{role} without {direction} {subject}: expected {first} to fail, failed {failed}")
    assert wrong == []


def test_nats_policy_reader_agrees_with_the_server(nats_auth: NatsAuthServer) -> None:
    """The policy pack reads the same nats.conf nats-server ran with, and judges each user as the
    server did: every need of the table is permitted, and each removal denies its subject."""
    from policies.compliance.rules import _nats_conf

    conf = _nats_conf.parse(nats_auth.config())
    users = _nats_conf.users(conf)
    assert users is not None and set(users) == set(nats_auth.users)
    for role in perm.ROLES:
        assert all(
            _nats_conf.permitted(users[role], n.permission, n.resource) for n in perm.needs(NATS_NEEDS, role)
        )
    for i, (role, direction, subject) in enumerate(REMOVALS):
        assert not _nats_conf.permitted(users[_removal_user(role, i)], direction, subject), (role, subject)


async def test_nats_streams_user_cannot_be_replaced_by_app_roles(nats_auth: NatsAuthServer) -> None:
    """The app roles cannot create streams: only the setup Job's user can."""
    for role in perm.ROLES:
        with pytest.raises(Exception):  # noqa: B017 - a timeout or a permissions error, per client version
            await _create_streams_as(nats_auth, role)


# --- SQS, with moto's IAM enforcement -----------------------------------------------------

REGION = "us-east-1"


@dataclass
class SqsIam:
    """A queue with a DLQ and one IAM user per policy variant, on a moto server whose IAM
    enforcement is switched on once everything is set up."""

    moto: MotoServer
    queue_url: str
    queue_arn: str
    keys: dict[str, tuple[str, str]]  # user -> (access key id, secret)

    def target(self) -> SqsQueue:
        return SqsQueue(queue_url=self.queue_url, region=REGION, endpoint_url=self.moto.endpoint)

    def client(self, user: str) -> Any:
        import boto3

        key, secret = self.keys[user]
        return boto3.client(
            "sqs",
            endpoint_url=self.moto.endpoint,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )


def _sqs_grants(role: str) -> list[tuple[str, str]]:
    """(action, "queue" or "dlq") of the role's unconditional SQS needs."""
    return sorted({(n.permission, n.resource) for n in perm.needs(perm.SQS, role) if n.when is None})


SQS_REMOVALS = [(role, grant) for role in perm.ROLES for grant in _sqs_grants(role)]


@pytest.fixture(scope="module")
def sqs_iam() -> Iterator[SqsIam]:
    import boto3
    import httpx

    moto = MotoServer().start()
    admin = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin", "region_name": REGION}
    try:
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint, **admin)
        iam = boto3.client("iam", endpoint_url=moto.endpoint, **admin)
        dlq = sqs.create_queue(QueueName="perm-tasks-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "6"})
        url = sqs.create_queue(QueueName="perm-tasks", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        variants = {role: _sqs_grants(role) for role in perm.ROLES}
        for i, (role, grant) in enumerate(SQS_REMOVALS):
            variants[f"{role}-minus-{i}"] = [g for g in variants[role] if g != grant]
        variants["seeder"] = [("sqs:SendMessage", "queue")]
        on = {"queue": arn, "dlq": dlq_arn}
        keys = {}
        for user, grants in variants.items():
            iam.create_user(UserName=user)
            statements = [
                {
                    "Effect": "Allow",
                    "Action": [a for a, r in grants if r == resource],
                    "Resource": on[resource],
                }
                for resource in sorted({r for _, r in grants})
            ]
            iam.put_user_policy(
                UserName=user,
                PolicyName="table",
                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
            )
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        # From now on every request is authenticated and authorised against IAM.
        httpx.post(f"{moto.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        yield SqsIam(moto, url, arn, keys)
    finally:
        moto.stop()


async def _sqs_phases(
    sqs_iam: SqsIam, user: str, role: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    from agent_app.queues.sqs_queue import SqsTaskQueue

    key, secret = sqs_iam.keys[user]
    # The adapter takes credentials from the standard chain, as it does from the task role on ECS.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return await run_phases(SqsTaskQueue(sqs_iam.target(), lease_seconds=LEASE), role)


def _seed(sqs_iam: SqsIam, count: int) -> None:
    seeder = sqs_iam.client("seeder")
    for i in range(count):
        seeder.send_message(QueueUrl=sqs_iam.queue_url, MessageBody=f'{{"seed": {i}}}')


async def test_sqs_each_role_works_with_exactly_its_actions(
    sqs_iam: SqsIam, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await _sqs_phases(sqs_iam, "api", "api", monkeypatch) == {}
    _seed(sqs_iam, SEEDED)
    assert await _sqs_phases(sqs_iam, "worker", "worker", monkeypatch) == {}


async def test_sqs_removing_any_action_fails_its_call_with_access_denied(
    sqs_iam: SqsIam, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = []
    for i, (role, (action, resource)) in enumerate(SQS_REMOVALS):
        _seed(sqs_iam, SEEDED)
        failed = await _sqs_phases(sqs_iam, f"{role}-minus-{i}", role, monkeypatch)
        phases = {
            n.phase for n in perm.needs(perm.SQS, role) if (n.permission, n.resource) == (action, resource)
        }
        first = min(phases, key=perm.PHASES.index)
        if list(failed) != [first] or "AccessDenied" not in failed[first]:
            wrong.append(
                f"{role} without {action} on its {resource}: expected {first} to fail with AccessDenied, "
                f"got {failed}"
            )
    assert wrong == []


def test_sqs_the_unauthorised_are_refused(sqs_iam: SqsIam) -> None:
    """The enforcement itself: the seeder may send but not receive."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="AccessDenied"):
        sqs_iam.client("seeder").receive_message(QueueUrl=sqs_iam.queue_url)


# --- Secrets Manager, as ECS reads a task's secrets with the execution role -------------------


def test_secrets_manager_get_secret_value_is_what_ecs_needs() -> None:
    import boto3
    import httpx
    from botocore.exceptions import ClientError

    actions = sorted({n.permission for n in perm.SECRETS_MANAGER if n.when is None})
    assert actions == ["secretsmanager:GetSecretValue"]
    moto = MotoServer().start()
    admin = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin", "region_name": REGION}
    try:
        sm = boto3.client("secretsmanager", endpoint_url=moto.endpoint, **admin)
        iam = boto3.client("iam", endpoint_url=moto.endpoint, **admin)
        arn = sm.create_secret(Name="api-keys", SecretString="k" * 32)["ARN"]
        clients = {}
        for user, granted in (("execution", actions), ("other", ["secretsmanager:DescribeSecret"])):
            iam.create_user(UserName=user)
            # moto authorises Secrets Manager calls against resource "*" (it does not resolve the
            # secret's ARN as it does a queue's), so only the action is under test here.
            statement = {"Effect": "Allow", "Action": granted, "Resource": "*"}
            doc = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
            iam.put_user_policy(UserName=user, PolicyName="table", PolicyDocument=doc)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            clients[user] = boto3.client(
                "secretsmanager",
                endpoint_url=moto.endpoint,
                region_name=REGION,
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=key["SecretAccessKey"],
            )
        httpx.post(f"{moto.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        assert clients["execution"].get_secret_value(SecretId=arn)["SecretString"] == "k" * 32
        with pytest.raises(ClientError, match="AccessDenied"):
            clients["other"].get_secret_value(SecretId=arn)
    finally:
        moto.stop()


# --- Pub/Sub: every RPC the real adapter makes, per role and phase ----------------------------

PROJECT = "perm-project"


class _Recorder(grpc.ServerInterceptor):
    """Notes (phase, RPC, resource) for every call the server answers."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.calls: list[tuple[str, str, str]] = []

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, rpc = str(handler_call_details.method).strip("/").split("/")
        name = f"{service.rsplit('.', 1)[-1]}.{rpc}"
        inner = handler.unary_unary

        def noted(request: Any, context: Any) -> Any:
            resource = getattr(request, "subscription", "") or getattr(request, "topic", "")
            if name.endswith((".CreateTopic", ".CreateSubscription")):
                resource = request.name
            self.calls.append((self.phase, name, resource))
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            noted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class RecordingPubSubServer(PubSubServer):
    """The lab's Pub/Sub server with every call noted under the phase the test is in."""

    def __init__(self) -> None:
        self._recorder = _Recorder()
        super().__init__(interceptors=[self._recorder])

    @property
    def phase(self) -> str:
        return self._recorder.phase

    @phase.setter
    def phase(self, value: str) -> None:
        self._recorder.phase = value

    @property
    def calls(self) -> list[tuple[str, str, str]]:
        return self._recorder.calls


@pytest.fixture
def recording_pubsub(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingPubSubServer]:
    from google.cloud import pubsub_v1
    from google.pubsub_v1 import types as pst

    server = RecordingPubSubServer()
    server.start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic, dlq = publisher.topic_path(PROJECT, "tasks"), publisher.topic_path(PROJECT, "tasks-dlq")
    publisher.create_topic(name=topic)
    publisher.create_topic(name=dlq)
    subscriber.create_subscription(
        request=pst.Subscription(
            name=subscriber.subscription_path(PROJECT, "workers"),
            topic=topic,
            ack_deadline_seconds=10,
            dead_letter_policy=pst.DeadLetterPolicy(dead_letter_topic=dlq, max_delivery_attempts=5),
        )
    )
    for i in range(SEEDED):
        publisher.publish(topic, f'{{"seed": {i}}}'.encode()).result(timeout=10)
    publisher.stop()
    subscriber.close()
    yield server
    server.stop()


class PhasedQueue(TaskQueue):
    """The real adapter, telling the recording server which phase each call belongs to."""

    def __init__(self, inner: TaskQueue, server: RecordingPubSubServer) -> None:
        self.inner, self.server, self.kind = inner, server, inner.kind

    async def start(self, *, consume: bool) -> None:
        self.server.phase = "start"
        await self.inner.start(consume=consume)

    async def check(self) -> None:
        self.server.phase = "readiness"
        await self.inner.check()

    async def publish(self, body: bytes, *, task_id: str) -> None:
        self.server.phase = "work"
        await self.inner.publish(body, task_id=task_id)

    async def receive(self, max_messages: int, wait_seconds: float = 1.0) -> list[Delivery]:
        self.server.phase = "work"
        return await self.inner.receive(max_messages, wait_seconds)

    async def close(self) -> None:
        self.server.phase = "closing"
        await self.inner.close()


@pytest.mark.parametrize("role", perm.ROLES)
async def test_pubsub_rpcs_per_phase_are_the_tables(
    recording_pubsub: RecordingPubSubServer, role: str
) -> None:
    from agent_app.queues.pubsub_queue import PubSubTaskQueue

    target = PubSubQueue(project=PROJECT, topic="tasks", subscription="workers")
    queue = PhasedQueue(PubSubTaskQueue(target, lease_seconds=LEASE), recording_pubsub)
    assert await run_phases(queue, role) == {}
    paths = {
        "topic": f"projects/{PROJECT}/topics/tasks",
        "subscription": f"projects/{PROJECT}/subscriptions/workers",
        "dead-letter topic": f"projects/{PROJECT}/topics/tasks-dlq",
    }
    for phase in perm.PHASES:
        observed = {(rpc, res) for p, rpc, res in recording_pubsub.calls if p == phase}
        expected = {(n.call, paths[n.resource]) for n in perm.needs(perm.PUBSUB, role, phase)}
        assert observed == expected, f"{role} {phase}"


def test_pubsub_table_permissions_come_from_the_roles_we_grant() -> None:
    """Every permission of the table is held by a predefined role the check knows."""
    for need in perm.PUBSUB + perm.SECRET_MANAGER:
        assert any(perm.role_grants(p, need.permission) for p in perm.GCP_ROLE_PERMISSIONS.values()), need
