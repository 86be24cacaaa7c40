"""The agent loop: ask the model, run the tools it calls, feed results back, stop at a reply.

The loop is the same for every backend. ``start_task`` is the one tool not run inline: the
caller passes a launcher that turns it into a queued task (the api does; the worker does
not, so a task cannot spawn tasks without bound).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent_app.model.base import ChatMessage, ModelBackend
from agent_app.schemas import Message, ToolUse
from agent_app.tools import START_TASK, TOOL_SPECS, ToolError, run_tool

MAX_STEPS = 4
SYSTEM_PROMPT = (
    "You are Skyfleet's agent. Answer briefly. Use the calculator for arithmetic, the clock for the "
    "time, lookup for Skyfleet terms, and start_task for long work the user wants done in the background."
)

TaskLauncher = Callable[[str], Awaitable[str]]
# The tools offered when nothing can be launched (the worker), computed once, not per turn.
_INLINE_TOOLS = [t for t in TOOL_SPECS if t["function"]["name"] != START_TASK]


@dataclass
class AgentResult:
    reply: str
    tool_calls: list[ToolUse] = field(default_factory=list)
    task_id: str | None = None


def to_chat(history: list[Message]) -> list[ChatMessage]:
    return [{"role": m.role, "content": m.content} for m in history]


class Agent:
    def __init__(self, model: ModelBackend) -> None:
        self.model = model

    async def respond(
        self, history: list[Message], text: str, *, launch_task: TaskLauncher | None = None
    ) -> AgentResult:
        tools = TOOL_SPECS if launch_task else _INLINE_TOOLS
        messages: list[ChatMessage] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            *to_chat(history),
            {"role": "user", "content": text},
        ]
        result = AgentResult(reply="")
        for _ in range(MAX_STEPS):
            reply = await self.model.complete(messages, tools)
            if not reply.tool_calls:
                result.reply = reply.content or ""
                return result
            messages.append(
                {
                    "role": "assistant",
                    "content": reply.content,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in reply.tool_calls
                    ],
                }
            )
            for call in reply.tool_calls:
                if call.name == START_TASK and launch_task and result.task_id is None:
                    result.task_id = await launch_task(str(call.arguments.get("input", text)))
                    output = json.dumps({"task_id": result.task_id, "status": "queued"})
                else:
                    try:
                        output = run_tool(call.name, call.arguments)
                    except ToolError as exc:
                        output = f"error: {exc}"
                result.tool_calls.append(ToolUse(name=call.name, arguments=call.arguments, result=output))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
        result.reply = f"I stopped after {MAX_STEPS} tool steps without a final answer."
        return result
