"""Google's own Pub/Sub protobuf classes, as shipped in google-cloud-pubsub.

The server speaks the real wire protocol, so it uses the raw protobuf classes behind the
client library's proto-plus types (``google.pubsub_v1.types``): the same messages, without
proto-plus's per-field wrapping on every request.
"""

from __future__ import annotations

import warnings
from typing import Any

# google-api-core warns on every import about a Python end-of-life years away.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")

from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2  # noqa: E402
from google.pubsub_v1 import types as _t  # noqa: E402
from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: E402


def _raw(name: str) -> Any:
    return getattr(_t, name).pb()


Topic: Any = _raw("Topic")
Subscription: Any = _raw("Subscription")
PubsubMessage: Any = _raw("PubsubMessage")
ReceivedMessage: Any = _raw("ReceivedMessage")
RetryPolicy: Any = _raw("RetryPolicy")
DeadLetterPolicy: Any = _raw("DeadLetterPolicy")
ExpirationPolicy: Any = _raw("ExpirationPolicy")
GetTopicRequest: Any = _raw("GetTopicRequest")
ListTopicsRequest: Any = _raw("ListTopicsRequest")
ListTopicsResponse: Any = _raw("ListTopicsResponse")
PublishRequest: Any = _raw("PublishRequest")
PublishResponse: Any = _raw("PublishResponse")
GetSubscriptionRequest: Any = _raw("GetSubscriptionRequest")
ListSubscriptionsRequest: Any = _raw("ListSubscriptionsRequest")
ListSubscriptionsResponse: Any = _raw("ListSubscriptionsResponse")
PullRequest: Any = _raw("PullRequest")
PullResponse: Any = _raw("PullResponse")
AcknowledgeRequest: Any = _raw("AcknowledgeRequest")
ModifyAckDeadlineRequest: Any = _raw("ModifyAckDeadlineRequest")

Empty = empty_pb2.Empty
Duration = duration_pb2.Duration
Timestamp = timestamp_pb2.Timestamp
Status = status_pb2.Status
ErrorInfo = error_details_pb2.ErrorInfo
Code = code_pb2

SUBSCRIPTION_ACTIVE: int = Subscription.State.Value("ACTIVE")
TOPIC_ACTIVE: int = Topic.State.Value("ACTIVE")


def duration(seconds: float) -> Any:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def seconds(d: Any) -> float:
    return d.ToNanoseconds() / 1e9
