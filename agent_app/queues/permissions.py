"""What each adapter's calls need from the identity that runs them: one table per adapter.

Every entry names the process role (``api``, ``worker``), the phase the call happens in
(``start``: before the process serves, ``readiness``: each ``/readyz``, ``work``: publishing or
consuming tasks), the API call as the client library makes it, the permission the provider
checks and the resource it must be granted on. The tables are data, tested against the most
faithful servers we can run (tests/integration/agent_app/test_permissions.py): moto's SQS with IAM
enforcement, the Pub/Sub gRPC test server recording each RPC, a real nats-server whose users get
exactly the allow lists below. The policy pack's ``skyfleet-workload-permissions`` rule checks
a plan's grants against them, and infra renders the on-prem NATS users from
:func:`nats_permissions`.

Standard library only: the policy pack and infra import this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Role = Literal["api", "worker"]
Phase = Literal["start", "readiness", "work"]
ROLES: tuple[Role, ...] = ("api", "worker")
PHASES: tuple[Phase, ...] = ("start", "readiness", "work")


@dataclass(frozen=True)
class Need:
    """One permission one call needs."""

    role: Role
    phase: Phase
    call: str  # the API call (SQS action, Pub/Sub RPC, NATS subject the client publishes to)
    permission: str  # IAM action / GCP permission / NATS direction ("publish" or "subscribe")
    resource: str  # what it is granted on: "queue", "topic", "subscription", "secret", "key", a subject
    # A condition under which the need applies (None: always), e.g. "queue-cmk".
    when: str | None = None


def needs(table: Iterable[Need], role: str, phase: str | None = None) -> tuple[Need, ...]:
    return tuple(n for n in table if n.role == role and (phase is None or n.phase == phase))


# --- Amazon SQS (agent_app/queues/sqs_queue.py), identity: the ECS task role ------------------
# Actions per API call: "Amazon SQS API permissions: Actions and resource reference"
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html
# Encrypted queues with a customer managed key: "Configuring KMS permissions for producers /
# consumers" (producers need kms:GenerateDataKey and kms:Decrypt, consumers kms:Decrypt)
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html
QUEUE_CMK = "queue-cmk"  # the queue is encrypted with a customer managed KMS key
DLQ_CMK = "dlq-cmk"  # the dead-letter queue is encrypted with a customer managed KMS key
SQS: tuple[Need, ...] = (
    # api: publish(); check() reads one attribute.
    Need("api", "readiness", "GetQueueAttributes", "sqs:GetQueueAttributes", "queue"),
    Need("api", "work", "SendMessage", "sqs:SendMessage", "queue"),
    Need("api", "work", "SendMessage", "kms:GenerateDataKey", "key", QUEUE_CMK),
    Need("api", "work", "SendMessage", "kms:Decrypt", "key", QUEUE_CMK),
    # worker: start(consume=True) reads the redrive policy; receive, ack (delete), release and
    # extend (visibility); requeue (shutdown) sends a copy to the queue; dead_letter sends to the
    # policy's dead-letter queue.
    Need("worker", "start", "GetQueueAttributes", "sqs:GetQueueAttributes", "queue"),
    Need("worker", "readiness", "GetQueueAttributes", "sqs:GetQueueAttributes", "queue"),
    Need("worker", "work", "ReceiveMessage", "sqs:ReceiveMessage", "queue"),
    Need("worker", "work", "ReceiveMessage", "kms:Decrypt", "key", QUEUE_CMK),
    Need("worker", "work", "DeleteMessage", "sqs:DeleteMessage", "queue"),
    Need("worker", "work", "ChangeMessageVisibility", "sqs:ChangeMessageVisibility", "queue"),
    Need("worker", "work", "SendMessage", "sqs:SendMessage", "queue"),
    Need("worker", "work", "SendMessage", "kms:GenerateDataKey", "key", QUEUE_CMK),
    Need("worker", "work", "SendMessage", "sqs:SendMessage", "dlq"),
    Need("worker", "work", "SendMessage", "kms:GenerateDataKey", "dlq-key", DLQ_CMK),
    Need("worker", "work", "SendMessage", "kms:Decrypt", "dlq-key", DLQ_CMK),
)

# --- Google Cloud Pub/Sub (agent_app/queues/pubsub_queue.py), identity: the service's account --
# Permission per RPC: "Access control with IAM", section "Required permissions"
# https://cloud.google.com/pubsub/docs/access-control#required_permissions
PUBSUB: tuple[Need, ...] = (
    Need("api", "readiness", "Publisher.GetTopic", "pubsub.topics.get", "topic"),
    Need("api", "work", "Publisher.Publish", "pubsub.topics.publish", "topic"),
    # The worker's start reads the dead-letter policy; its readiness checks the subscription.
    Need("worker", "start", "Subscriber.GetSubscription", "pubsub.subscriptions.get", "subscription"),
    Need("worker", "readiness", "Subscriber.GetSubscription", "pubsub.subscriptions.get", "subscription"),
    Need("worker", "work", "Subscriber.Pull", "pubsub.subscriptions.consume", "subscription"),
    Need("worker", "work", "Subscriber.ModifyAckDeadline", "pubsub.subscriptions.consume", "subscription"),
    Need("worker", "work", "Subscriber.Acknowledge", "pubsub.subscriptions.consume", "subscription"),
    # requeue (shutdown) publishes a copy to the task topic, dead_letter to the subscription's
    # dead-letter topic.
    Need("worker", "work", "Publisher.Publish", "pubsub.topics.publish", "topic"),
    Need("worker", "work", "Publisher.Publish", "pubsub.topics.publish", "dead-letter topic"),
)

# --- Secrets the platform reads for the app before it starts ----------------------------------
# ECS injects `secrets[].valueFrom` with the task *execution* role: "Pass Secrets Manager secrets
# through Amazon ECS environment variables" / "Amazon ECS task execution IAM role", section
# "Required permissions for Secrets Manager or Systems Manager": secretsmanager:GetSecretValue on
# the secret, kms:Decrypt on its key only when the key is customer managed; ssm:GetParameters
# for Parameter Store references.
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html
SECRET_CMK = "secret-cmk"  # the secret is encrypted with a customer managed KMS key
SSM_PARAMETER = "ssm-parameter"  # the reference is a Parameter Store parameter
SECRETS_MANAGER: tuple[Need, ...] = tuple(
    need
    for role in ROLES
    for need in (
        Need(role, "start", "GetSecretValue", "secretsmanager:GetSecretValue", "secret"),
        Need(role, "start", "GetSecretValue", "kms:Decrypt", "key", SECRET_CMK),
        Need(role, "start", "GetParameters", "ssm:GetParameters", "secret", SSM_PARAMETER),
    )
)
# Cloud Run resolves secret env vars and secret volumes as the service's account: "Configure
# secrets for services": the account needs the Secret Manager Secret Accessor role on the
# secret, i.e. secretmanager.versions.access.
# https://cloud.google.com/run/docs/configuring/services/secrets#access-secret
SECRET_MANAGER: tuple[Need, ...] = tuple(
    Need(role, "start", "AccessSecretVersion", "secretmanager.versions.access", "secret") for role in ROLES
)

# The cache (agent_app/cache.py) authenticates with Redis AUTH: a password from the secret store.
# Neither ElastiCache AUTH nor Memorystore AUTH checks a cloud identity on data-plane calls.
REDIS: tuple[Need, ...] = ()

# Predefined GCP roles -> the permissions of them our tables use, from "IAM roles and
# permissions": https://cloud.google.com/iam/docs/roles-permissions/pubsub and
# https://cloud.google.com/iam/docs/roles-permissions/secretmanager (roles/owner holds every
# permission). Roles not listed here grant none of the tables' permissions as far as the check knows.
GCP_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/owner": frozenset({"*"}),
    "roles/pubsub.admin": frozenset({"pubsub.*"}),
    "roles/pubsub.editor": frozenset(
        {
            "pubsub.topics.get",
            "pubsub.topics.publish",
            "pubsub.topics.attachSubscription",
            "pubsub.subscriptions.get",
            "pubsub.subscriptions.consume",
        }
    ),
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.subscriber": frozenset(
        {"pubsub.subscriptions.consume", "pubsub.topics.attachSubscription", "pubsub.snapshots.seek"}
    ),
    "roles/pubsub.viewer": frozenset({"pubsub.topics.get", "pubsub.subscriptions.get"}),
    "roles/secretmanager.admin": frozenset({"secretmanager.*"}),
    "roles/secretmanager.secretAccessor": frozenset({"secretmanager.versions.access"}),
}


def role_grants(permissions: Iterable[str], permission: str) -> bool:
    """A role's permission set holds ``permission`` (``service.*`` and ``*`` included)."""
    service = permission.split(".", 1)[0]
    return any(p in (permission, "*", f"{service}.*") for p in permissions)


# --- NATS JetStream (agent_app/queues/nats_queue.py), identity: the NATS user -----------------
# Subjects of the JetStream API: "JetStream wire API reference"
# https://docs.nats.io/reference/reference-protocols/nats_api_reference ; permissions are
# publish/subscribe allow lists per user: "Authorization"
# https://docs.nats.io/running-a-nats-service/configuration/securing_nats/authorization
# The streams exist before the app starts: a setup Job creates them as the "streams" user, so
# the app only reads their info. Replies (JetStream API answers, publish acks) come to the
# client's _INBOX.
NATS_CONSUMER = "agent-worker"  # the worker's durable pull consumer
INBOX = "_INBOX.>"
NatsRole = Literal["api", "worker", "streams"]


def nats_dlq_stream(stream: str) -> str:
    """The stream that keeps the dead letters of ``stream``."""
    return f"{stream}_DLQ"


def nats_needs(stream: str, subject: str, dlq_subject: str) -> tuple[Need, ...]:
    """The NATS subjects each app role publishes to or subscribes on, per phase."""
    api_ = "$JS.API"
    dlq_stream = nats_dlq_stream(stream)
    consumer = f"{stream}.{NATS_CONSUMER}"
    out: list[Need] = []
    for role in ROLES:
        out += [
            Need(role, "start", "subscribe replies", "subscribe", INBOX),
            Need(role, "start", "STREAM.INFO", "publish", f"{api_}.STREAM.INFO.{stream}"),
            Need(role, "start", "STREAM.INFO", "publish", f"{api_}.STREAM.INFO.{dlq_stream}"),
            Need(role, "readiness", "STREAM.INFO", "publish", f"{api_}.STREAM.INFO.{stream}"),
        ]
    out += [
        Need("api", "work", "publish task", "publish", subject),
        Need(
            "worker",
            "start",
            "CONSUMER.DURABLE.CREATE",
            "publish",
            f"{api_}.CONSUMER.DURABLE.CREATE.{consumer}",
        ),
        Need("worker", "work", "CONSUMER.MSG.NEXT", "publish", f"{api_}.CONSUMER.MSG.NEXT.{consumer}"),
        # ack, nak, in-progress and term all publish to the message's reply subject.
        Need("worker", "work", "ack/nak/progress/term", "publish", f"$JS.ACK.{consumer}.>"),
        Need("worker", "work", "publish requeued copy", "publish", subject),
        Need("worker", "work", "publish dead letter", "publish", dlq_subject),
    ]
    return tuple(out)


def nats_streams_subjects(stream: str) -> list[str]:
    """What the setup Job's ``streams`` user publishes to: create, update and read both streams
    (``$JS.API.INFO`` for clients such as the nats CLI that read the account first)."""
    subjects = ["$JS.API.INFO"]
    for name in (stream, nats_dlq_stream(stream)):
        subjects += [f"$JS.API.STREAM.{op}.{name}" for op in ("CREATE", "UPDATE", "INFO")]
    return subjects


def nats_permissions(
    stream: str, subject: str, dlq_subject: str
) -> dict[str, dict[str, dict[str, list[str]]]]:
    """nats.conf-ready permissions per NATS user (``api``, ``worker``, ``streams``):
    ``{"publish": {"allow": [...]}, "subscribe": {"allow": [...]}}``, everything else denied."""
    table = nats_needs(stream, subject, dlq_subject)
    result: dict[str, dict[str, dict[str, list[str]]]] = {}
    for role in ROLES:
        mine = needs(table, role)
        result[role] = {
            direction: {"allow": sorted({n.resource for n in mine if n.permission == direction})}
            for direction in ("publish", "subscribe")
        }
    result["streams"] = {
        "publish": {"allow": nats_streams_subjects(stream)},
        "subscribe": {"allow": [INBOX]},
    }
    return result
