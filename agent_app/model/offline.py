"""The built-in offline model: deterministic, no network, yet it behaves like an agent.

It reads the conversation, decides whether a tool is needed (arithmetic -> calculator, time
-> clock, "what is X" -> lookup, "in the background" -> start_task), and phrases its answer
from the tool's result or from what the user said earlier. The same input always gives the
same output (apart from the clock), which is what tests, drills and benchmarks need.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent_app.model.base import ChatMessage, ModelReply, ToolCall
from agent_app.tools import START_TASK

_ARITH = re.compile(r"[-+(]*\s*\d[\d\s.+\-*/%^()]*[+\-*/%^]\s*[\d(][\d\s.+\-*/%^()]*")
_NAME_IS = re.compile(r"\bmy name is ([A-Za-z][\w' -]{0,40})", re.IGNORECASE)
_LOOKUP = re.compile(
    r"^(?:what is|what's|define|look ?up|who is)\s+(?:an?\s+|the\s+)?(.+?)[?.!]*$", re.IGNORECASE
)
# Background work is asked for up front ("background: ...") or at the end ("... in the
# background"); the end is found without a regex, which would retry at every whitespace.
_BACKGROUND = re.compile(r"^(?:background:|in the background[,:]?|async:)\s*(.+)$", re.I | re.S)
_BACKGROUND_SUFFIXES = ("in the background", "in the background.", "in the background!")
# Stretches of a message made only of what an expression holds; longer ones are no calculator
# question. Searched one stretch at a time, an expression costs the time of its stretch, where a
# search of the whole message retried from every position (quadratic in its length).
_ARITH_STRETCH = re.compile(r"[-+(\d][\d\s.+\-*/%^()]*")
MAX_EXPRESSION_CHARS = 200
_TIME = re.compile(r"\b(time|clock|date|today)\b", re.IGNORECASE)
_ASK_NAME = re.compile(r"\b(what is my name|what's my name|who am i)\b", re.IGNORECASE)
_RECALL = re.compile(r"\b(what did i (say|ask)|summari[sz]e)\b", re.IGNORECASE)


def _user_texts(messages: list[ChatMessage]) -> list[str]:
    return [str(m.get("content") or "") for m in messages if m.get("role") == "user"]


class OfflineModel:
    name = "offline"

    async def complete(self, messages: list[ChatMessage], tools: list[dict[str, Any]]) -> ModelReply:
        last = messages[-1]
        if last.get("role") == "tool":
            return ModelReply(self._after_tool(messages))
        return self._respond(messages, {t["function"]["name"] for t in tools})

    def _call(self, messages: list[ChatMessage], name: str, **arguments: str) -> ModelReply:
        return ModelReply(None, [ToolCall(id=f"call_{len(messages)}_{name}", name=name, arguments=arguments)])

    def _respond(self, messages: list[ChatMessage], tools: set[str]) -> ModelReply:
        text = str(messages[-1].get("content") or "").strip()
        history = _user_texts(messages[:-1])
        background = _background(text)
        if background and START_TASK in tools:
            return self._call(messages, START_TASK, input=background)
        if _ASK_NAME.search(text):
            names = [m.group(1).strip() for t in history if (m := _NAME_IS.search(t))]
            return ModelReply(
                f"Your name is {names[-1]}." if names else "You have not told me your name yet."
            )
        if name := _NAME_IS.search(text):
            return ModelReply(f"Nice to meet you, {name.group(1).strip()}. I will remember that.")
        if _RECALL.search(text):
            if not history:
                return ModelReply("This is the first thing you said in this session.")
            return ModelReply("So far you said: " + "; ".join(f"“{t}”" for t in history[-3:]))
        if (expr := _arithmetic(text)) and "calculator" in tools:
            return self._call(messages, "calculator", expression=expr)
        if _TIME.search(text) and "clock" in tools:
            return self._call(messages, "clock")
        if (term := _LOOKUP.match(text)) and "lookup" in tools:
            return self._call(messages, "lookup", term=term.group(1))
        turn = len(history) + 1
        return ModelReply(f"You said: “{text}”. This is turn {turn} of our conversation.")

    def _after_tool(self, messages: list[ChatMessage]) -> str:
        result = str(messages[-1].get("content") or "")
        call = next(
            (
                c
                for m in reversed(messages)
                for c in m.get("tool_calls") or []
                if c["id"] == messages[-1].get("tool_call_id")
            ),
            None,
        )
        name = call["function"]["name"] if call else ""
        args: dict[str, Any] = json.loads(call["function"]["arguments"]) if call else {}
        if result.startswith("error:"):
            return f"I could not use the {name} tool: {result.removeprefix('error:').strip()}."
        if name == "calculator":
            return f"{args.get('expression', '')} = {result}"
        if name == "clock":
            return f"It is {result} (UTC)."
        if name == "lookup":
            return result
        if name == START_TASK:
            task_id = json.loads(result).get("task_id", "")
            return f"I started background task {task_id}; its result will appear here when it is done."
        return result

    async def aclose(self) -> None:
        return None


def _background(text: str) -> str | None:
    """What the message asks to be done in the background, if it does."""
    if m := _BACKGROUND.match(text):
        return m.group(1).strip() or None
    lowered = text.lower()
    for suffix in _BACKGROUND_SUFFIXES:
        head = text[: -len(suffix)]
        if lowered.endswith(suffix) and head[-1:].isspace() and head.strip():
            return head.strip()
    return None


def _arithmetic(text: str) -> str | None:
    """The first arithmetic expression in the message."""
    for stretch in _ARITH_STRETCH.finditer(text):
        if len(stretch.group(0)) <= MAX_EXPRESSION_CHARS and (m := _ARITH.search(stretch.group(0))):
            return m.group(0).strip()
    return None
