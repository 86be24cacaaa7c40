"""Pub/Sub's delivery semantics: topics, subscriptions, leases, retries, dead letters, retention.

One lock guards the whole state (the gRPC server runs each call in its own thread, as the
client library calls from several threads). Every rule below is the service's documented
behaviour; where the documentation leaves a choice open, the choice is named.

- Publish fans a message out to every subscription the topic has at that moment; a topic
  without subscriptions drops it (https://cloud.google.com/pubsub/docs/subscriber). Message ids
  are unique per server (so per topic) and never reused, even across restarts.
- A pulled message is leased for the subscription's ack deadline; ``ModifyAckDeadline`` sets a
  new deadline from now, and 0 is a NACK. A lease that runs out, or a NACK, is a failed
  delivery: the message is redelivered, after the retry policy's backoff if the subscription
  has one, at once otherwise (https://cloud.google.com/pubsub/docs/subscription-retry-policy).
  The documented backoff is "exponential between the minimum and the maximum, best effort";
  here it is the minimum doubled per failed delivery, capped at the maximum.
- ``delivery_attempt`` is 1 + NACKs + lapsed deadlines, and is set only when the subscription
  has a dead-letter policy (``ReceivedMessage.delivery_attempt`` in the API reference). When a
  delivery fails and the message has had ``max_delivery_attempts`` deliveries, it is forwarded
  to the dead-letter topic as a new message carrying the ``CloudPubSubDeadLetter*`` attributes,
  and removed from the subscription (https://cloud.google.com/pubsub/docs/handling-failures).
  The service agent needs publish on the dead-letter topic and consume on the subscription to
  do that; with IAM enforced and either grant missing, messages are not forwarded and keep
  being redelivered.
- A message is kept for the subscription's ``message_retention_duration``, or the topic's if
  that is longer (``Subscription.topic_message_retention_duration``), counted from its publish
  time; after that it is discarded whether acked or not
  (https://cloud.google.com/pubsub/docs/subscription-properties).
- Acks: at-least-once subscriptions accept an ack id of any delivery of a message still held
  (an ack after the deadline lapsed still removes it, unless it was discarded meanwhile); an
  unknown one is ignored. With exactly-once delivery only the latest delivery's ack id, while
  its lease runs, is valid; others fail with INVALID_ARGUMENT and an ``ErrorInfo`` naming each
  (``EXACTLY_ONCE_ACKID_FAILURE``, ``PERMANENT_FAILURE_INVALID_ACK_ID``), which is what the
  client library parses (https://cloud.google.com/pubsub/docs/exactly-once-delivery), and an
  acknowledged ack is on disk before it is answered.

``time_scale`` makes every service duration (ack deadlines, backoff, retention) pass faster in
real time, for tests and drills; the API still shows the configured values.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from skyfleet.lab.pubsub import pb
from skyfleet.lab.pubsub.iam import Policy
from skyfleet.lab.pubsub.journal import Journal, frame

# Pub/Sub's limits (https://cloud.google.com/pubsub/quotas#resource_limits and the fields' API
# reference); a request beyond them is refused here as by the service.
MIN_ACK_DEADLINE, MAX_ACK_DEADLINE, DEFAULT_ACK_DEADLINE = 10, 600, 10
MIN_RETENTION, MAX_RETENTION = 600.0, 31 * 24 * 3600.0
DEFAULT_SUBSCRIPTION_RETENTION = 7 * 24 * 3600.0
MAX_BACKOFF_LIMIT = 600.0
DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF = 10.0, 600.0
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS, DEFAULT_DELIVERY_ATTEMPTS = 5, 100, 5
MAX_PUBLISH_MESSAGES = 1000
MAX_PUBLISH_BYTES = 10 * 1000 * 1000
MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE = 100, 256, 1024
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")

# Memory accounting: a message's bytes plus a fixed cost per message and per subscription entry.
MESSAGE_OVERHEAD, ENTRY_OVERHEAD = 200, 200
DEFAULT_MAX_BACKLOG_BYTES = 256 * 1024 * 1024
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024
ID_BLOCK = 100_000

# Journal record kinds.
K_TOPIC, K_SUB, K_MESSAGES, K_STATE, K_REMOVE, K_RESERVE = (ord(c) for c in "TSMLAR")

DEAD_LETTER_ATTRIBUTES = (
    "CloudPubSubDeadLetterSourceDeliveryCount",
    "CloudPubSubDeadLetterSourceSubscription",
    "CloudPubSubDeadLetterSourceSubscriptionProject",
    "CloudPubSubDeadLetterSourceTopicPublishTime",
)


class ServiceError(Exception):
    """An RPC error as the service returns it: a gRPC status code and its message."""

    def __init__(self, code: grpc.StatusCode, message: str, *, info: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.info = info  # a google.rpc.ErrorInfo sent in the status details


def invalid(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(kind: str, name: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, f"Resource not found ({kind}={name}).")


def parse_name(name: str, collection: str) -> tuple[str, str]:
    """``projects/P/<collection>/ID`` -> (P, ID), checked against the service's naming rules."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "projects" or not parts[1] or parts[2] != collection:
        raise invalid(
            f"Invalid resource name given (name={name}); expected projects/<project>/{collection}/<id>"
        )
    if not _ID.match(parts[3]) or parts[3].startswith("goog"):
        raise invalid(
            f"Invalid resource name given (name={name}): an id is 3-255 characters, starts with a letter, "
            "holds only letters, digits and - _ . ~ + %, and does not start with 'goog'"
        )
    return parts[1], parts[3]


def _check_retention(seconds: float, what: str) -> None:
    if not MIN_RETENTION <= seconds <= MAX_RETENTION:
        raise invalid(f"{what} must be between 10 minutes and 31 days (got {seconds:g} s)")


def normalize_topic(topic: Any) -> Any:
    """Validate a Topic as CreateTopic does; return the stored form."""
    parse_name(topic.name, "topics")
    out = pb.Topic()
    out.CopyFrom(topic)
    if out.HasField("message_retention_duration"):
        _check_retention(pb.seconds(out.message_retention_duration), "message_retention_duration")
    for field in ("message_storage_policy", "schema_settings", "ingestion_data_source_settings"):
        if out.HasField(field):
            raise ServiceError(
                grpc.StatusCode.UNIMPLEMENTED, f"Topic.{field} is not reproduced by this server"
            )
    if out.kms_key_name or len(out.message_transforms):
        raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "CMEK and message transforms are not reproduced")
    out.state = pb.TOPIC_ACTIVE
    return out


def normalize_subscription(sub: Any, topics: dict[str, Any]) -> Any:
    """Validate a Subscription as CreateSubscription does (defaults filled in); return it."""
    parse_name(sub.name, "subscriptions")
    if sub.topic not in topics:
        raise not_found("topic", sub.topic)
    out = pb.Subscription()
    out.CopyFrom(sub)
    unsupported = [
        f
        for f in ("push_config", "bigquery_config", "cloud_storage_config", "bigtable_config")
        if out.HasField(f)
    ]
    if out.filter:
        unsupported.append("filter")
    if out.enable_message_ordering:
        unsupported.append("enable_message_ordering")
    if len(out.message_transforms):
        unsupported.append("message_transforms")
    if unsupported:
        raise ServiceError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Subscription {', '.join(unsupported)} not reproduced by this server (pull subscriptions only)",
        )
    out.ack_deadline_seconds = out.ack_deadline_seconds or DEFAULT_ACK_DEADLINE
    if not MIN_ACK_DEADLINE <= out.ack_deadline_seconds <= MAX_ACK_DEADLINE:
        raise invalid(
            f"ack_deadline_seconds must be between {MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE} "
            f"(got {out.ack_deadline_seconds})"
        )
    if not out.HasField("message_retention_duration"):
        out.message_retention_duration.CopyFrom(pb.duration(DEFAULT_SUBSCRIPTION_RETENTION))
    _check_retention(pb.seconds(out.message_retention_duration), "message_retention_duration")
    if out.HasField("retry_policy"):
        rp = out.retry_policy
        if not rp.HasField("minimum_backoff"):
            rp.minimum_backoff.CopyFrom(pb.duration(DEFAULT_MIN_BACKOFF))
        if not rp.HasField("maximum_backoff"):
            rp.maximum_backoff.CopyFrom(pb.duration(DEFAULT_MAX_BACKOFF))
        low, high = pb.seconds(rp.minimum_backoff), pb.seconds(rp.maximum_backoff)
        if not (0 <= low <= MAX_BACKOFF_LIMIT and 0 <= high <= MAX_BACKOFF_LIMIT):
            raise invalid(f"retry_policy backoffs must be between 0 and 600 s (got {low:g} s, {high:g} s)")
        if low > high:
            raise invalid(
                f"retry_policy minimum_backoff ({low:g} s) must not exceed maximum_backoff ({high:g} s)"
            )
    if out.HasField("dead_letter_policy") and out.dead_letter_policy.dead_letter_topic:
        dl = out.dead_letter_policy
        if dl.dead_letter_topic not in topics:
            raise not_found("dead_letter_topic", dl.dead_letter_topic)
        dl.max_delivery_attempts = dl.max_delivery_attempts or DEFAULT_DELIVERY_ATTEMPTS
        if not MIN_DELIVERY_ATTEMPTS <= dl.max_delivery_attempts <= MAX_DELIVERY_ATTEMPTS:
            raise invalid(
                f"max_delivery_attempts must be between {MIN_DELIVERY_ATTEMPTS} and "
                f"{MAX_DELIVERY_ATTEMPTS} (got {dl.max_delivery_attempts})"
            )
    else:
        out.ClearField("dead_letter_policy")
    topic = topics[out.topic]
    if topic.HasField("message_retention_duration"):
        out.topic_message_retention_duration.CopyFrom(topic.message_retention_duration)
    out.state = pb.SUBSCRIPTION_ACTIVE
    return out


@dataclass(eq=False, slots=True)
class Stored:
    """A published message, shared by the subscriptions that hold it."""

    seq: int
    topic: str
    message: Any  # pb.PubsubMessage with message_id and publish_time set
    publish_wall: float
    size: int
    refs: int = 0


@dataclass(eq=False, slots=True)
class Entry:
    """One subscription's copy of a message and its delivery state."""

    stored: Stored
    expire_at: float
    failures: int = 0  # NACKs + lapsed deadlines
    gen: int = 0  # deliveries so far; the latest ack id carries it
    lease_until: float | None = None  # outstanding until then
    available_at: float = 0.0


class Sub:
    def __init__(self, config: Any, scale: float, lock: threading.Lock) -> None:
        self.config = config
        self.name: str = config.name
        self.topic: str = config.topic
        self.key = hashlib.blake2s(self.name.encode(), digest_size=4).hexdigest()
        self.entries: dict[int, Entry] = {}
        self.ready: list[tuple[float, int]] = []  # (available_at, seq), lazily cleaned
        self.leases: list[tuple[float, int, int]] = []  # (lease_until, seq, gen), lazily cleaned
        self.by_age: deque[tuple[float, int]] = deque()  # (expire_at, seq) in publish order
        self.cond = threading.Condition(lock)
        self.ack_deadline = config.ack_deadline_seconds * scale
        retention = pb.seconds(config.message_retention_duration)
        if config.HasField("topic_message_retention_duration"):
            retention = max(retention, pb.seconds(config.topic_message_retention_duration))
        self.retention = retention * scale
        self.backoff: tuple[float, float] | None = None
        if config.HasField("retry_policy"):
            rp = config.retry_policy
            self.backoff = (pb.seconds(rp.minimum_backoff) * scale, pb.seconds(rp.maximum_backoff) * scale)
        dl = config.dead_letter_policy if config.HasField("dead_letter_policy") else None
        self.dead_letter_topic: str | None = dl.dead_letter_topic if dl else None
        self.max_attempts: int | None = dl.max_delivery_attempts if dl else None
        self.exactly_once: bool = config.enable_exactly_once_delivery

    def delay(self, failures: int) -> float:
        if self.backoff is None:
            return 0.0
        low, high = self.backoff
        return min(high, low * 2 ** min(failures - 1, 40))

    def ack_id(self, entry: Entry) -> str:
        return f"{self.key}-{entry.stored.seq}-{entry.gen}"

    def parse_ack_id(self, ack_id: str) -> tuple[int, int] | None:
        key, _, rest = ack_id.partition("-")
        seq, _, gen = rest.partition("-")
        if key != self.key or not seq.isdigit() or not gen.isdigit():
            return None
        return int(seq), int(gen)


def _message_size(message: Any) -> int:
    return (
        len(message.data)
        + sum(len(k) + len(v) for k, v in message.attributes.items())
        + len(message.ordering_key)
        + MESSAGE_OVERHEAD
    )


def _check_message(message: Any) -> None:
    if not message.data and not message.attributes:
        raise invalid("A message must contain either a non-empty data field or at least one attribute")
    if len(message.attributes) > MAX_ATTRIBUTES:
        raise invalid(f"A message may have at most {MAX_ATTRIBUTES} attributes")
    for key, value in message.attributes.items():
        if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY:
            raise invalid(f"Attribute keys must be 1-{MAX_ATTRIBUTE_KEY} bytes (key {key[:40]!r})")
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE:
            raise invalid(f"Attribute values must be at most {MAX_ATTRIBUTE_VALUE} bytes (key {key!r})")
        if key.startswith("goog"):
            raise invalid(f"Attribute keys must not start with 'goog' (key {key!r})")


def _pack(meta: dict[str, Any], blobs: Iterable[bytes] = ()) -> bytes:
    head = json.dumps(meta, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + b"".join(blobs)


def _unpack(payload: bytes) -> tuple[dict[str, Any], memoryview]:
    (n,) = struct.unpack_from("<I", payload)
    return json.loads(payload[4 : 4 + n]), memoryview(payload)[4 + n :]


class Engine:
    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        journal: Journal | None = None,
        policy: Policy | None = None,
        compact_above_bytes: int = DEFAULT_COMPACT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scale = time_scale
        self.max_backlog_bytes = max_backlog_bytes
        self.journal = journal
        self.policy = policy
        self.compact_above_bytes = compact_above_bytes
        self.clock = clock
        self.topics: dict[str, Any] = {}
        self.subs: dict[str, Sub] = {}
        self.declared: set[str] = set()  # from the config, not the journal
        self._lock = threading.Lock()
        self._seq = 0
        self._reserved = 0
        self.backlog_bytes = 0  # held by subscriptions
        self._pending_bytes = 0  # published, waiting for the disk
        self._pending: dict[int, tuple[list[Stored], list[str]]] = {}
        self._log: list[bytes] = []
        self._rewritten_size = 0
        self.dead_lettered = 0
        self.closed = False

    # --- time -------------------------------------------------------------------------------

    def _to_wall(self, mono: float) -> float:
        return time.time() + (mono - self.clock())

    def _to_mono(self, wall: float) -> float:
        return self.clock() + (wall - time.time())

    # --- journal ------------------------------------------------------------------------------

    def _flush(self) -> int:
        """Append the records of the current operation (under the lock); return the position."""
        if self.journal is None or not self._log:
            self._log.clear()
            return 0
        records, self._log = self._log, []
        return self.journal.append(records)

    def _sync(self, position: int) -> None:
        if self.journal is not None and position:
            self.journal.sync(position)

    def _state_record(self, sub: Sub, e: Entry) -> bytes:
        return frame(
            K_STATE,
            _pack(
                {
                    "s": sub.name,
                    "q": e.stored.seq,
                    "g": e.gen,
                    "f": e.failures,
                    "u": None if e.lease_until is None else self._to_wall(e.lease_until),
                    "a": self._to_wall(e.available_at),
                }
            ),
        )

    def _messages_record(self, stored: list[Stored], subs: list[str]) -> bytes:
        meta = {
            "t": stored[0].topic,
            "s": subs,
            "m": [
                [
                    s.seq,
                    s.publish_wall,
                    len(s.message.data),
                    dict(s.message.attributes),
                    s.message.ordering_key,
                ]
                for s in stored
            ],
        }
        return frame(K_MESSAGES, _pack(meta, (s.message.data for s in stored)))

    def _next_seq(self) -> int:
        self._seq += 1
        if self._seq > self._reserved:
            self._reserved = self._seq + ID_BLOCK
            self._log.append(frame(K_RESERVE, _pack({"upto": self._reserved})))
        return self._seq

    # --- resources ----------------------------------------------------------------------------

    def declare(self, topics: Iterable[Any], subscriptions: Iterable[Any]) -> None:
        """The configured resources (the plan's); they exist before the journal is replayed."""
        with self._lock:
            for topic in topics:
                self._add_topic(normalize_topic(topic))
                self.declared.add(topic.name)
            for sub in subscriptions:
                self._add_sub(normalize_subscription(sub, self.topics))
                self.declared.add(sub.name)

    def _add_topic(self, topic: Any) -> None:
        if topic.name in self.topics:
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS, f"Resource already exists (topic={topic.name})."
            )
        self.topics[topic.name] = topic

    def _add_sub(self, config: Any) -> Sub:
        if config.name in self.subs:
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS, f"Resource already exists (subscription={config.name})."
            )
        sub = Sub(config, self.scale, self._lock)
        self.subs[sub.name] = sub
        return sub

    def create_topic(self, topic: Any) -> Any:
        with self._lock:
            stored = normalize_topic(topic)
            self._add_topic(stored)
            self._log.append(frame(K_TOPIC, stored.SerializeToString()))
            position = self._flush()
        self._sync(position)
        return stored

    def get_topic(self, name: str) -> Any:
        with self._lock:
            if name not in self.topics:
                raise not_found("topic", name)
            return self.topics[name]

    def list_topics(self, project: str) -> list[Any]:
        with self._lock:
            return [t for n, t in sorted(self.topics.items()) if n.startswith(f"{project}/topics/")]

    def create_subscription(self, request: Any) -> Any:
        with self._lock:
            config = normalize_subscription(request, self.topics)
            self._add_sub(config)
            self._log.append(frame(K_SUB, config.SerializeToString()))
            position = self._flush()
        self._sync(position)
        return config

    def get_subscription(self, name: str) -> Any:
        with self._lock:
            return self._sub(name).config

    def list_subscriptions(self, project: str) -> list[Any]:
        with self._lock:
            return [
                s.config for n, s in sorted(self.subs.items()) if n.startswith(f"{project}/subscriptions/")
            ]

    def _sub(self, name: str) -> Sub:
        sub = self.subs.get(name)
        if sub is None:
            raise not_found("subscription", name)
        return sub

    # --- publish ------------------------------------------------------------------------------

    def publish(self, topic: str, messages: list[Any]) -> list[str]:
        if not messages:
            raise invalid("A publish request must contain at least one message")
        if len(messages) > MAX_PUBLISH_MESSAGES:
            raise invalid(f"A publish request may hold at most {MAX_PUBLISH_MESSAGES} messages")
        sizes = [m.ByteSize() for m in messages]
        if sum(sizes) > MAX_PUBLISH_BYTES:
            raise invalid(f"Request payload size exceeds the limit: {MAX_PUBLISH_BYTES} bytes")
        for m in messages:
            _check_message(m)
        now_wall = time.time()
        with self._lock:
            if topic not in self.topics:
                raise not_found("topic", topic)
            targets = [s.name for s in self.subs.values() if s.topic == topic]
            stored = []
            for m in messages:
                seq = self._next_seq()
                message = pb.PubsubMessage(
                    data=m.data, attributes=m.attributes, ordering_key=m.ordering_key, message_id=str(seq)
                )
                message.publish_time.FromNanoseconds(int(now_wall * 1e9))
                stored.append(Stored(seq, topic, message, now_wall, _message_size(message)))
            ids = [s.message.message_id for s in stored]
            if not targets:
                self._flush()  # a topic without subscriptions keeps nothing
                return ids
            cost = sum(s.size + ENTRY_OVERHEAD * len(targets) for s in stored)
            held = self.backlog_bytes + self._pending_bytes
            if held + cost > self.max_backlog_bytes:
                self._flush()
                raise ServiceError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"This server's backlog is full ({held} of {self.max_backlog_bytes} bytes); "
                    "ack or let messages expire, or raise max_backlog_bytes",
                )
            if self.journal is None:
                self._flush()
                self._insert(stored, targets)
                return ids
            self._log.append(self._messages_record(stored, targets))
            position = self._flush()
            self._pending[stored[0].seq] = (stored, targets)
            self._pending_bytes += cost
        try:
            self.journal.sync(position)
        except OSError as exc:
            with self._lock:
                if self._pending.pop(stored[0].seq, None) is not None:
                    self._pending_bytes -= cost
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"could not persist the messages: {exc}") from exc
        # Subscribers see a message only once it is on disk, as the publisher does.
        with self._lock:
            if self._pending.pop(stored[0].seq, None) is not None:
                self._pending_bytes -= cost
                self._insert(stored, targets)
        return ids

    def _insert(self, stored: list[Stored], targets: list[str], now: float | None = None) -> None:
        """Hand messages to the subscriptions named (those that still exist)."""
        now = self.clock() if now is None else now
        subs = [self.subs[name] for name in targets if name in self.subs]
        if not subs:
            return
        for s in stored:
            published = self._to_mono(s.publish_wall)
            self.backlog_bytes += s.size
            for sub in subs:
                e = Entry(s, expire_at=published + sub.retention, available_at=now)
                sub.entries[s.seq] = e
                s.refs += 1
                self.backlog_bytes += ENTRY_OVERHEAD
                heapq.heappush(sub.ready, (now, s.seq))
                sub.by_age.append((e.expire_at, s.seq))
        for sub in subs:
            sub.cond.notify_all()

    def _remove(self, sub: Sub, e: Entry) -> None:
        del sub.entries[e.stored.seq]
        e.stored.refs -= 1
        self.backlog_bytes -= ENTRY_OVERHEAD
        if e.stored.refs == 0:
            self.backlog_bytes -= e.stored.size

    # --- delivery -----------------------------------------------------------------------------

    def _advance(self, sub: Sub, now: float) -> None:
        """Apply what time did: lapsed leases are failed deliveries; old messages go."""
        while sub.leases and sub.leases[0][0] <= now:
            deadline, seq, gen = heapq.heappop(sub.leases)
            e = sub.entries.get(seq)
            if e is not None and e.gen == gen and e.lease_until == deadline:
                self._failed(sub, e, now)
        removed = []
        while sub.by_age and sub.by_age[0][0] <= now:
            _, seq = sub.by_age.popleft()
            e = sub.entries.get(seq)
            if e is not None:
                self._remove(sub, e)
                removed.append(seq)
        if removed:
            self._log.append(frame(K_REMOVE, _pack({"s": sub.name, "q": removed})))

    def _failed(self, sub: Sub, e: Entry, now: float) -> None:
        """A NACK or a lapsed deadline: redeliver after the backoff, or dead-letter."""
        e.lease_until = None
        e.failures += 1
        if sub.max_attempts is not None and e.failures >= sub.max_attempts and self._may_dead_letter(sub):
            self._dead_letter(sub, e, now)
            return
        e.available_at = now + sub.delay(e.failures)
        heapq.heappush(sub.ready, (e.available_at, e.stored.seq))
        self._log.append(self._state_record(sub, e))
        sub.cond.notify_all()

    def _may_dead_letter(self, sub: Sub) -> bool:
        if sub.dead_letter_topic not in self.topics:
            return False
        if self.policy is None:
            return True
        agent = self.policy.service_agent or ""
        return (
            self.policy.missing(
                agent,
                [
                    ("pubsub.topics.publish", sub.dead_letter_topic or ""),
                    ("pubsub.subscriptions.consume", sub.name),
                ],
            )
            is None
        )

    def _dead_letter(self, sub: Sub, e: Entry, now: float) -> None:
        topic = sub.dead_letter_topic or ""
        source = e.stored.message
        attributes = dict(source.attributes)
        project, sub_id = sub.name.split("/")[1], sub.name.split("/")[3]
        published = source.publish_time.ToDatetime().isoformat(timespec="microseconds") + "Z"
        attributes.update(
            zip(DEAD_LETTER_ATTRIBUTES, (str(e.failures), sub_id, project, published), strict=True)
        )
        now_wall = time.time()
        seq = self._next_seq()
        message = pb.PubsubMessage(
            data=source.data, attributes=attributes, ordering_key=source.ordering_key, message_id=str(seq)
        )
        message.publish_time.FromNanoseconds(int(now_wall * 1e9))
        forwarded = Stored(seq, topic, message, now_wall, _message_size(message))
        targets = [s.name for s in self.subs.values() if s.topic == topic]
        # Forwarded first, removed second: a crash between the two forwards the message again
        # ("the same message might be dead lettered multiple times", DeadLetterPolicy).
        if targets:
            self._log.append(self._messages_record([forwarded], targets))
            self._insert([forwarded], targets, now)
        self._remove(sub, e)
        self._log.append(frame(K_REMOVE, _pack({"s": sub.name, "q": [e.stored.seq]})))
        self.dead_lettered += 1

    def pull(
        self,
        name: str,
        max_messages: int,
        wait_seconds: float,
        active: Callable[[], bool] = lambda: True,
    ) -> list[Any]:
        """Up to ``max_messages`` deliveries; waits up to ``wait_seconds`` for a first one.
        Nothing is leased to a caller that is gone (``active`` false, see ``wake``)."""
        if max_messages <= 0:
            raise invalid("max_messages must be greater than 0")
        with self._lock:
            sub = self._sub(name)
            give_up = self.clock() + max(0.0, wait_seconds)
            while True:
                if self.closed:
                    raise ServiceError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down.")
                if not active():
                    raise ServiceError(grpc.StatusCode.CANCELLED, "The caller went away.")
                now = self.clock()
                self._advance(sub, now)
                taken = self._take(sub, now, max_messages)
                if taken or now >= give_up:
                    break
                wake = give_up
                if sub.ready:
                    wake = min(wake, sub.ready[0][0])
                if sub.leases:
                    wake = min(wake, sub.leases[0][0])
                self._flush()
                sub.cond.wait(max(0.0, wake - now))
            tracked = sub.max_attempts is not None
            out = []
            for e in taken:
                self._log.append(self._state_record(sub, e))
                out.append(
                    pb.ReceivedMessage(
                        ack_id=sub.ack_id(e),
                        message=e.stored.message,
                        delivery_attempt=e.failures + 1 if tracked else 0,
                    )
                )
            self._flush()
            return out

    def _take(self, sub: Sub, now: float, limit: int) -> list[Entry]:
        taken: list[Entry] = []
        while sub.ready and len(taken) < limit:
            available_at, seq = sub.ready[0]
            if available_at > now:
                break
            heapq.heappop(sub.ready)
            e = sub.entries.get(seq)
            if e is None or e.lease_until is not None or e.available_at != available_at:
                continue  # acked, leased or rescheduled since this heap entry was made
            e.gen += 1
            e.lease_until = deadline = now + sub.ack_deadline
            heapq.heappush(sub.leases, (deadline, seq, e.gen))
            taken.append(e)
        return taken

    def _resolve(self, sub: Sub, ack_ids: Iterable[str]) -> Iterator[tuple[str, Entry | None, int]]:
        for ack_id in ack_ids:
            parsed = sub.parse_ack_id(ack_id)
            if parsed is None:
                if sub.exactly_once:
                    yield ack_id, None, 0
                    continue
                raise invalid(f"You have passed an invalid ack ID to the service (ack_id={ack_id}).")
            seq, gen = parsed
            yield ack_id, sub.entries.get(seq), gen

    def acknowledge(self, name: str, ack_ids: list[str]) -> None:
        failures: dict[str, str] = {}
        with self._lock:
            sub = self._sub(name)
            self._advance(sub, self.clock())
            acked = []
            for ack_id, e, gen in list(self._resolve(sub, ack_ids)):
                if sub.exactly_once:
                    if e is None or e.gen != gen or e.lease_until is None:
                        failures[ack_id] = "PERMANENT_FAILURE_INVALID_ACK_ID"
                        continue
                elif e is None or not 0 < gen <= e.gen:
                    continue  # already acked, discarded, or never delivered: ignored
                self._remove(sub, e)
                acked.append(e.stored.seq)
            if acked:
                self._log.append(frame(K_REMOVE, _pack({"s": sub.name, "q": acked})))
            position = self._flush()
        if sub.exactly_once:
            self._sync(position)
            self._raise_ack_failures(failures)

    def modify_ack_deadline(self, name: str, ack_ids: list[str], seconds: int) -> None:
        if not 0 <= seconds <= MAX_ACK_DEADLINE:
            raise invalid(f"ack_deadline_seconds must be between 0 and {MAX_ACK_DEADLINE} (got {seconds})")
        failures: dict[str, str] = {}
        with self._lock:
            sub = self._sub(name)
            now = self.clock()
            self._advance(sub, now)
            for ack_id, e, gen in list(self._resolve(sub, ack_ids)):
                if e is None or e.gen != gen or e.lease_until is None:
                    if sub.exactly_once:
                        failures[ack_id] = "PERMANENT_FAILURE_INVALID_ACK_ID"
                    continue  # a lapsed or superseded delivery: nothing to extend or release
                if seconds == 0:
                    self._failed(sub, e, now)
                else:
                    e.lease_until = deadline = now + seconds * self.scale
                    heapq.heappush(sub.leases, (deadline, e.stored.seq, e.gen))
                    self._log.append(self._state_record(sub, e))
            self._flush()
        self._raise_ack_failures(failures)

    @staticmethod
    def _raise_ack_failures(failures: dict[str, str]) -> None:
        if not failures:
            return
        info = pb.ErrorInfo(reason="EXACTLY_ONCE_ACKID_FAILURE", domain="pubsub.googleapis.com")
        info.metadata.update(failures)
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Some acknowledgement ids in the request were invalid. This could be because the "
            "acknowledgement ids have expired or the acknowledgement ids were malformed.",
            info=info,
        )

    # --- housekeeping -------------------------------------------------------------------------

    def tick(self) -> None:
        """Expire leases and old messages, forward dead letters, compact the journal if due."""
        with self._lock:
            before = self.dead_lettered
            now = self.clock()
            for sub in self.subs.values():
                self._advance(sub, now)
            position = self._flush()
            forwarded = self.dead_lettered != before
            if self.journal is not None and self.journal.size > max(
                self.compact_above_bytes, 4 * self.backlog_bytes, 2 * self._rewritten_size
            ):
                self._rewrite()
                position = 0
        if forwarded:
            self._sync(position)

    def wake(self, name: str) -> None:
        """Wake the Pulls waiting on a subscription (one of their callers went away)."""
        with self._lock:
            sub = self.subs.get(name)
            if sub is not None:
                sub.cond.notify_all()

    def held(self) -> int:
        """Messages held by all subscriptions."""
        with self._lock:
            return sum(len(s.entries) for s in self.subs.values())

    def close(self) -> None:
        """Wake every waiting Pull so the server can stop."""
        with self._lock:
            self.closed = True
            for sub in self.subs.values():
                sub.cond.notify_all()

    def backlog(self, name: str) -> int:
        """Messages the subscription holds (outstanding or not)."""
        with self._lock:
            return len(self._sub(name).entries)

    # --- recovery -----------------------------------------------------------------------------

    def _snapshot(self) -> Iterator[bytes]:
        """The live state as journal records (under the lock)."""
        yield frame(K_RESERVE, _pack({"upto": self._reserved}))
        for name, topic in self.topics.items():
            if name not in self.declared:
                yield frame(K_TOPIC, topic.SerializeToString())
        for name, sub in self.subs.items():
            if name not in self.declared:
                yield frame(K_SUB, sub.config.SerializeToString())
        holders: dict[int, tuple[Stored, list[str]]] = {}
        for sub in self.subs.values():
            for seq, e in sub.entries.items():
                holders.setdefault(seq, (e.stored, []))[1].append(sub.name)
        for stored, subs in self._pending.values():
            for s in stored:
                holders[s.seq] = (s, subs)
        for stored_one, subs in holders.values():
            yield self._messages_record([stored_one], subs)
        now = self.clock()
        for sub in self.subs.values():
            for e in sub.entries.values():
                if e.gen or e.failures or e.available_at > now:
                    yield self._state_record(sub, e)

    def recover(self) -> int:
        """Rebuild the state from the journal; return how many messages are held."""
        if self.journal is None:
            return 0
        with self._lock:
            now = self.clock()
            for kind, payload in self.journal.replay():
                if kind == K_RESERVE:
                    self._reserved = max(self._reserved, _unpack(payload)[0]["upto"])
                elif kind == K_TOPIC:
                    topic = pb.Topic.FromString(payload)
                    if topic.name not in self.topics:
                        self.topics[topic.name] = topic
                elif kind == K_SUB:
                    config = pb.Subscription.FromString(payload)
                    if config.name not in self.subs and config.topic in self.topics:
                        self._add_sub(config)
                elif kind == K_MESSAGES:
                    self._replay_messages(payload, now)
                elif kind == K_STATE:
                    self._replay_state(_unpack(payload)[0], now)
                elif kind == K_REMOVE:
                    meta = _unpack(payload)[0]
                    sub = self.subs.get(meta["s"])
                    for seq in meta["q"]:
                        e = sub.entries.get(seq) if sub else None
                        if sub is not None and e is not None:
                            self._remove(sub, e)
            # Ids handed out before the crash (even for messages nobody kept) are never reused.
            self._seq = self._reserved
            for sub in self.subs.values():
                sub.by_age = deque(sorted((e.expire_at, seq) for seq, e in sub.entries.items()))
            for sub in self.subs.values():
                self._advance(sub, now)
            self._log.clear()  # the rewrite records the result
            self._rewrite()
            return sum(len(s.entries) for s in self.subs.values())

    def _rewrite(self) -> None:
        assert self.journal is not None
        self.journal.rewrite(self._snapshot())
        self._rewritten_size = self.journal.size

    def _replay_messages(self, payload: bytes, now: float) -> None:
        meta, blob = _unpack(payload)
        stored, pos = [], 0
        for seq, publish_wall, length, attributes, ordering_key in meta["m"]:
            data = bytes(blob[pos : pos + length])
            pos += length
            message = pb.PubsubMessage(
                data=data, attributes=attributes, ordering_key=ordering_key, message_id=str(seq)
            )
            message.publish_time.FromNanoseconds(int(publish_wall * 1e9))
            stored.append(Stored(seq, meta["t"], message, publish_wall, _message_size(message)))
            self._reserved = max(self._reserved, seq)
        self._insert(stored, meta["s"], now)

    def _replay_state(self, meta: dict[str, Any], now: float) -> None:
        sub = self.subs.get(meta["s"])
        e = sub.entries.get(meta["q"]) if sub else None
        if sub is None or e is None:
            return
        e.gen, e.failures = meta["g"], meta["f"]
        e.lease_until = None
        e.available_at = self._to_mono(meta["a"])
        if meta["u"] is not None:
            e.lease_until = deadline = self._to_mono(meta["u"])
            heapq.heappush(sub.leases, (deadline, e.stored.seq, e.gen))
        else:
            heapq.heappush(sub.ready, (e.available_at, e.stored.seq))
