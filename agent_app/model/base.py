"""The model backend interface, in the chat-completions shape every backend speaks.

Messages and tool specs are plain dicts in the OpenAI wire format so that the offline model
and a real endpoint see exactly the same conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

ChatMessage = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ModelReply:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


class ModelBackend(Protocol):
    name: str

    async def complete(self, messages: list[ChatMessage], tools: list[dict[str, Any]]) -> ModelReply: ...

    async def aclose(self) -> None: ...
