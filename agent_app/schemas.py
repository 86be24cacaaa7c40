"""Pydantic models: the API's bodies, what is stored in Redis, and the queue message.

They are the contracts between the api, the worker and clients; the committed OpenAPI
document is generated from them, and the limits declared here are the ones enforced.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGE_CHARS = 4000
MAX_BODY_BYTES = 64 * 1024
# What another site of the fleet may send (a whole session's copy), bounded to protect memory.
MAX_PEER_BODY_BYTES = 64 * 1024 * 1024
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# An Idempotency-Key header: printable ASCII (a UUID, typically), optionally quoted.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"


class Strict(BaseModel):
    """What clients (and the queue) send: exactly the published schema, nothing coerced.

    Pydantic's default (lax) mode would take ``false`` or ``"5"`` for a number and ``1`` for
    a string, values the committed OpenAPI document refuses; strict mode refuses them too
    (a JSON integer still counts as a number, as in JSON Schema)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ToolUse(BaseModel):
    name: str
    arguments: dict[str, Any]
    result: str


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    at: float = Field(description="Unix time the message was stored")
    turn_id: str | None = Field(
        default=None, description="Turn this message belongs to (deduplicates retried writes)"
    )
    tool_calls: list[ToolUse] = Field(default_factory=list)
    task_id: str | None = Field(default=None, description="Task started by, or reported in, this message")


# A label's key and value. The bound also makes pydantic check the text is encodable (no lone
# surrogate from a JSON escape), which an unconstrained str is not checked for.
LabelKey = Annotated[str, Field(min_length=1, max_length=64)]
LabelValue = Annotated[str, Field(max_length=512)]


class SessionCreate(Strict):
    metadata: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=16, description="Free-form labels kept with the session"
    )


class Session(BaseModel):
    id: str
    created_at: float
    updated_at: float
    turns: int = Field(description="Completed user turns")
    max_turns: int
    metadata: dict[str, str] = Field(default_factory=dict)
    messages: list[Message]


class MessageCreate(Strict):
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class TurnReply(BaseModel):
    session_id: str
    turn: int
    reply: Message
    task_id: str | None = Field(default=None, description="Set when the agent handed work to the queue")


class TaskCreate(Strict):
    input: str = Field(
        min_length=1, max_length=MAX_MESSAGE_CHARS, description="What the agent should work on"
    )
    work_seconds: float = Field(
        default=0,
        ge=0,
        le=600,
        allow_inf_nan=False,
        description="Extra time the offline model spends on the task: stands in for a slow model call",
    )


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TaskAccepted(BaseModel):
    task_id: str
    status: TaskStatus
    status_url: str


class Task(BaseModel):
    id: str
    session_id: str
    status: TaskStatus
    input: str
    result: str | None = None
    tool_calls: list[ToolUse] = Field(default_factory=list)
    error: str | None = None
    attempts: int = Field(default=0, description="Times a worker started the task")
    created_at: float
    updated_at: float


class FleetSite(BaseModel):
    name: str
    url: str = Field(description="The site's regional base URL (https), covered by its certificate")


class Fleet(BaseModel):
    """The sites a client may send any request to: every site serves every session."""

    site: str = Field(description="The site that answered")
    sites: list[FleetSite] = Field(description="Every site of the fleet; empty when the site runs alone")


class TaskMessage(Strict):
    """The queue message body; everything a worker needs even if the task record lags."""

    v: Literal[1] = 1
    task_id: str = Field(pattern=ID_PATTERN)
    session_id: str = Field(pattern=ID_PATTERN)
    input: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    work_seconds: float = Field(default=0, ge=0, le=600, allow_inf_nan=False)
    enqueued_at: float


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code")
    message: str
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["ok", "ready", "not_ready"]
    site: str
    instance: str
    checks: dict[str, str] = Field(default_factory=dict)
