"""The server's configuration file, and how it is built from a plan of the GCP stack.

The file is JSON (durations in seconds, names short or full)::

    {"listen": {"host": "127.0.0.1", "port": 8085},
     "project": "my-project",
     "data_dir": "/var/lib/pubsub",            // absent: nothing survives a restart
     "topics": [{"name": "tasks", "message_retention_seconds": 345600}],
     "subscriptions": [{"name": "tasks-worker", "topic": "tasks", "ack_deadline_seconds": 120,
                        "message_retention_seconds": 345600,
                        "retry_policy": {"minimum_backoff_seconds": 10, "maximum_backoff_seconds": 600},
                        "dead_letter_policy": {"dead_letter_topic": "tasks-dead-letter",
                                               "max_delivery_attempts": 5}}],
     "iam": {"service_agent": "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com",
             "grants": [{"resource": "topics/tasks", "role": "roles/pubsub.publisher",
                         "member": "serviceAccount:api@my-project.iam.gserviceaccount.com"}],
             "callers": [{"member": "serviceAccount:api@my-project.iam.gserviceaccount.com", "port": 8086}]}}

``config_from_plan`` writes it from the plan's ``gcp:pubsub/*`` resources, so the lab's Pub/Sub
is configured by the same program that configures the deployed one, with no second description.
Every value is checked against Pub/Sub's own limits when the file is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyfleet.lab.errors import LabConfigError
from skyfleet.lab.pubsub import pb
from skyfleet.lab.pubsub.engine import (
    DEFAULT_COMPACT_BYTES,
    DEFAULT_MAX_BACKLOG_BYTES,
    ServiceError,
    normalize_subscription,
    normalize_topic,
)
from skyfleet.lab.pubsub.iam import ROLE_PERMISSIONS, Grant, Policy


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class TopicConfig(_Model):
    name: str
    message_retention_seconds: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class RetryPolicyConfig(_Model):
    minimum_backoff_seconds: float = 10
    maximum_backoff_seconds: float = 600


class DeadLetterPolicyConfig(_Model):
    dead_letter_topic: str
    max_delivery_attempts: int = 5


class SubscriptionConfig(_Model):
    name: str
    topic: str
    ack_deadline_seconds: int = 10
    message_retention_seconds: float = 7 * 24 * 3600
    retain_acked_messages: bool = False
    retry_policy: RetryPolicyConfig | None = None
    dead_letter_policy: DeadLetterPolicyConfig | None = None
    enable_exactly_once_delivery: bool = False
    # None: the subscription never expires for inactivity (reported, not enforced).
    expiration_ttl_seconds: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class GrantConfig(_Model):
    resource: str  # "projects/P", "topics/T" or "subscriptions/S" (short or full)
    role: str
    member: str


class CallerConfig(_Model):
    member: str
    port: int = Field(ge=0, le=65535)


class IamConfig(_Model):
    service_agent: str | None = None
    grants: list[GrantConfig] = Field(default_factory=list)
    callers: list[CallerConfig] = Field(default_factory=list)


class PubSubConfig(_Model):
    listen: ListenConfig
    project: str
    data_dir: Path | None = None
    # Every service duration (ack deadlines, backoff, retention) runs this many times as fast.
    time_scale: float = Field(default=1.0, gt=0, le=1)
    max_backlog_bytes: int = Field(default=DEFAULT_MAX_BACKLOG_BYTES, ge=1024 * 1024)
    compact_journal_above_bytes: int = Field(default=DEFAULT_COMPACT_BYTES, ge=0)
    topics: list[TopicConfig] = Field(default_factory=list)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)
    iam: IamConfig | None = None

    def full_name(self, collection: str, name: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self.project}/{collection}/{name}"

    def resources(self) -> tuple[list[Any], list[Any]]:
        """The topics and subscriptions as the API's messages, checked against the service's
        limits; an error names the entry that is wrong."""
        topics, subs = [], []
        known: dict[str, Any] = {}
        for i, t in enumerate(self.topics):
            topic = pb.Topic(name=self.full_name("topics", t.name), labels=t.labels)
            if t.message_retention_seconds is not None:
                topic.message_retention_duration.CopyFrom(pb.duration(t.message_retention_seconds))
            topic = _checked(lambda topic=topic: normalize_topic(topic), f"topics[{i}] ({t.name})")
            if topic.name in known:
                raise ValueError(f"topics[{i}] ({t.name}): declared twice")
            known[topic.name] = topic
            topics.append(topic)
        names: set[str] = set()
        for i, s in enumerate(self.subscriptions):
            sub = pb.Subscription(
                name=self.full_name("subscriptions", s.name),
                topic=self.full_name("topics", s.topic),
                ack_deadline_seconds=s.ack_deadline_seconds,
                retain_acked_messages=s.retain_acked_messages,
                enable_exactly_once_delivery=s.enable_exactly_once_delivery,
                labels=s.labels,
            )
            sub.message_retention_duration.CopyFrom(pb.duration(s.message_retention_seconds))
            sub.expiration_policy.SetInParent()
            if s.expiration_ttl_seconds is not None:
                sub.expiration_policy.ttl.CopyFrom(pb.duration(s.expiration_ttl_seconds))
            if s.retry_policy is not None:
                sub.retry_policy.minimum_backoff.CopyFrom(pb.duration(s.retry_policy.minimum_backoff_seconds))
                sub.retry_policy.maximum_backoff.CopyFrom(pb.duration(s.retry_policy.maximum_backoff_seconds))
            if s.dead_letter_policy is not None:
                sub.dead_letter_policy.dead_letter_topic = self.full_name(
                    "topics", s.dead_letter_policy.dead_letter_topic
                )
                sub.dead_letter_policy.max_delivery_attempts = s.dead_letter_policy.max_delivery_attempts
            sub = _checked(
                lambda sub=sub: normalize_subscription(sub, known), f"subscriptions[{i}] ({s.name})"
            )
            if sub.name in names:
                raise ValueError(f"subscriptions[{i}] ({s.name}): declared twice")
            names.add(sub.name)
            subs.append(sub)
        return topics, subs

    def policy(self) -> Policy | None:
        if self.iam is None:
            return None
        grants = []
        for i, g in enumerate(self.iam.grants):
            if g.role not in ROLE_PERMISSIONS:
                raise ValueError(
                    f"iam.grants[{i}]: unknown role {g.role!r} (known: {', '.join(sorted(ROLE_PERMISSIONS))})"
                )
            resource = g.resource
            if not resource.startswith("projects/"):
                collection, _, name = resource.partition("/")
                if collection not in ("topics", "subscriptions") or not name:
                    raise ValueError(
                        f"iam.grants[{i}]: resource {resource!r} is not "
                        "projects/P, topics/T or subscriptions/S"
                    )
                resource = self.full_name(collection, name)
            grants.append(Grant(resource, g.role, g.member))
        return Policy(grants, self.iam.service_agent)


def _checked(build: Any, where: str) -> Any:
    try:
        return build()
    except ServiceError as exc:
        raise ValueError(f"{where}: {exc.message}") from None


def load_config(path: Path) -> PubSubConfig:
    """Read and check a config file; every error names the file and the entry."""
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise LabConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise LabConfigError(f"{path}: not JSON: {exc}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Any, *, source: str = "<config>") -> PubSubConfig:
    try:
        config = PubSubConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise LabConfigError(f"{source}: invalid Pub/Sub config\n" + "\n".join(lines)) from None
    try:
        config.resources()
        config.policy()
    except ValueError as exc:
        raise LabConfigError(f"{source}: {exc}") from None
    return config


# --- from a plan ------------------------------------------------------------------------------

TOPIC = "gcp:pubsub/topic:Topic"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
_IAM = {
    "gcp:pubsub/topicIAMMember:TopicIAMMember": "topics",
    "gcp:pubsub/topicIAMBinding:TopicIAMBinding": "topics",
    "gcp:pubsub/topicIAMPolicy:TopicIAMPolicy": "topics",
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": "subscriptions",
    "gcp:pubsub/subscriptionIAMBinding:SubscriptionIAMBinding": "subscriptions",
    "gcp:pubsub/subscriptionIAMPolicy:SubscriptionIAMPolicy": "subscriptions",
    "gcp:projects/iAMMember:IAMMember": "projects",
    "gcp:projects/iAMBinding:IAMBinding": "projects",
    "gcp:projects/iAMPolicy:IAMPolicy": "projects",
}
# The value the plan's mocks give an output not known before deployment (pulumi.runtime.rpc).
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def _fields(resource: Any) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(type, name, inputs, outputs) of a ``PlannedResource`` or of one from the plan's JSON."""
    if isinstance(resource, Mapping):
        return resource["type"], resource["name"], resource.get("inputs") or {}, resource.get("outputs") or {}
    return resource.type, resource.name, resource.inputs or {}, resource.outputs or {}


class _Reader:
    """Reads one planned resource's inputs, naming the resource and field in every error."""

    def __init__(self, typ: str, name: str, inputs: Mapping[str, Any]) -> None:
        self.where = f"{typ} {name!r}"
        self.inputs = inputs

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        value: Any = self.inputs
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            if required:
                raise LabConfigError(f"plan: {self.where}: {key} is not set")
            return default
        if value == _UNKNOWN:
            raise LabConfigError(f"plan: {self.where}: {key} is not known until deployment")
        return value

    def seconds(self, key: str, default: float | None = None) -> float | None:
        value = self.get(key)
        if value is None or value == "":
            return default
        text = str(value)
        try:
            return float(text[:-1] if text.endswith("s") else text)
        except ValueError:
            raise LabConfigError(
                f"plan: {self.where}: {key} {value!r} is not a duration like '600s'"
            ) from None


def _resource_path(collection: str, value: str, project: str) -> str:
    if value.startswith("projects/"):
        return value
    return f"projects/{project}" if collection == "projects" else f"projects/{project}/{collection}/{value}"


def config_from_plan(
    resources: Iterable[Any],
    *,
    port: int,
    host: str = "127.0.0.1",
    data_dir: Path | None = None,
    callers: Mapping[str, int] | None = None,
    time_scale: float = 1.0,
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
) -> dict[str, Any]:
    """The server's config (a JSON-ready dict) for the Pub/Sub resources of a plan.

    ``resources`` are ``skyfleet.plan.PlannedResource`` objects or the dicts of a plan's JSON.
    ``callers`` maps an IAM member (``serviceAccount:...``) to the port its process is given;
    with callers, the plan's grants are enforced on those ports.
    """
    planned = [_fields(r) for r in resources]
    topics: list[dict[str, Any]] = []
    subscriptions: list[dict[str, Any]] = []
    grants: list[dict[str, Any]] = []
    service_agent: str | None = None
    projects: list[str] = []

    for typ, name, inputs, outputs in planned:
        r = _Reader(typ, name, inputs)
        if typ == TOPIC:
            project = r.get("project", required=True)
            projects.append(project)
            if r.get("kmsKeyName") or r.get("schemaSettings") or r.get("ingestionDataSourceSettings"):
                raise LabConfigError(f"plan: {r.where}: CMEK, schemas and ingestion are not reproduced")
            topics.append(
                {
                    "name": _resource_path("topics", r.get("name", required=True), project),
                    "message_retention_seconds": r.seconds("messageRetentionDuration"),
                    "labels": r.get("labels", {}),
                }
            )
        elif typ == SUBSCRIPTION:
            project = r.get("project", required=True)
            for unsupported in ("pushConfig", "bigqueryConfig", "cloudStorageConfig", "filter"):
                if r.get(unsupported):
                    raise LabConfigError(f"plan: {r.where}: {unsupported} is not reproduced (pull only)")
            if r.get("enableMessageOrdering"):
                raise LabConfigError(f"plan: {r.where}: enableMessageOrdering is not reproduced")
            sub: dict[str, Any] = {
                "name": _resource_path("subscriptions", r.get("name", required=True), project),
                "topic": _resource_path("topics", r.get("topic", required=True), project),
                "ack_deadline_seconds": int(r.get("ackDeadlineSeconds", 10)),
                "message_retention_seconds": r.seconds("messageRetentionDuration", 7 * 24 * 3600),
                "retain_acked_messages": bool(r.get("retainAckedMessages", False)),
                "enable_exactly_once_delivery": bool(r.get("enableExactlyOnceDelivery", False)),
                "expiration_ttl_seconds": r.seconds("expirationPolicy.ttl"),
                "labels": r.get("labels", {}),
            }
            if r.get("retryPolicy") is not None:
                sub["retry_policy"] = {
                    "minimum_backoff_seconds": r.seconds("retryPolicy.minimumBackoff", 10),
                    "maximum_backoff_seconds": r.seconds("retryPolicy.maximumBackoff", 600),
                }
            if r.get("deadLetterPolicy.deadLetterTopic"):
                sub["dead_letter_policy"] = {
                    "dead_letter_topic": _resource_path(
                        "topics", r.get("deadLetterPolicy.deadLetterTopic"), project
                    ),
                    "max_delivery_attempts": int(r.get("deadLetterPolicy.maxDeliveryAttempts", 5)),
                }
            subscriptions.append(sub)
        elif typ == SERVICE_IDENTITY and r.get("service") == "pubsub.googleapis.com":
            email = outputs.get("email")
            if not email or email == _UNKNOWN:
                raise LabConfigError(f"plan: {r.where}: the service agent's email is not in the plan")
            service_agent = f"serviceAccount:{email}"
        elif typ in _IAM:
            grants.extend(_grants(r, typ, _IAM[typ]))

    if not topics:
        raise LabConfigError("plan: no gcp:pubsub/topic:Topic resource (is this a GCP stack's plan?)")
    raw: dict[str, Any] = {
        "listen": {"host": host, "port": port},
        "project": projects[0],
        "time_scale": time_scale,
        "max_backlog_bytes": max_backlog_bytes,
        "topics": topics,
        "subscriptions": subscriptions,
    }
    if data_dir is not None:
        raw["data_dir"] = str(data_dir)
    if callers:
        raw["iam"] = {
            "service_agent": service_agent,
            "grants": grants,
            "callers": [{"member": m, "port": p} for m, p in callers.items()],
        }
    parse_config(raw, source="plan")  # the limits, checked now, not when the server starts
    return raw


def _grants(r: _Reader, typ: str, collection: str) -> list[dict[str, Any]]:
    project = r.get("project", required=True)
    key = {"topics": "topic", "subscriptions": "subscription", "projects": "project"}[collection]
    resource = _resource_path(collection, r.get(key, required=True), project)
    if typ.endswith("Policy"):
        try:
            bindings = json.loads(r.get("policyData", required=True)).get("bindings", [])
        except (TypeError, json.JSONDecodeError):
            raise LabConfigError(f"plan: {r.where}: policyData is not a JSON IAM policy") from None
        pairs = [(b["role"], m) for b in bindings for m in b.get("members", [])]
    elif typ.endswith("Binding"):
        pairs = [(r.get("role", required=True), m) for m in r.get("members", required=True)]
    else:
        pairs = [(r.get("role", required=True), r.get("member", required=True))]
    out = []
    for role, member in pairs:
        if role.startswith(("projects/", "organizations/")):
            raise LabConfigError(f"plan: {r.where}: custom role {role} cannot be reproduced")
        if role in ROLE_PERMISSIONS:  # other roles grant none of the permissions served here
            out.append({"resource": resource, "role": role, "member": member})
    return out
