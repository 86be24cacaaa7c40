"""The offline model reads a message in one pass: what it asks for, found in any message the
api accepts, however long and whatever it holds."""

from __future__ import annotations

import pytest

from agent_app.model.offline import OfflineModel
from agent_app.schemas import MAX_MESSAGE_CHARS
from agent_app.tools import START_TASK

pytestmark = pytest.mark.unit

TOOLS = [{"function": {"name": n}} for n in ("calculator", "clock", "lookup", START_TASK)]


async def ask(text: str) -> tuple[str | None, dict[str, str]]:
    reply = await OfflineModel().complete([{"role": "user", "content": text}], TOOLS)
    call = reply.tool_calls[0] if reply.tool_calls else None
    return (call.name, call.arguments) if call else (None, {})


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ("what is 7*7", ("calculator", {"expression": "7*7"})),
        ("compute (2+3)*4 please", ("calculator", {"expression": "(2+3)*4"})),
        ("summarise my notes in the background", (START_TASK, {"input": "summarise my notes"})),
        ("background: tidy up", (START_TASK, {"input": "tidy up"})),
        ("in the background, tidy up", (START_TASK, {"input": "tidy up"})),
        # What a message of the longest size holds around the question does not hide it.
        ("(" * (MAX_MESSAGE_CHARS - 20) + " what is 6*7", ("calculator", {"expression": "6*7"})),
        (" " * (MAX_MESSAGE_CHARS - 40) + "x in the background", (START_TASK, {"input": "x"})),
    ],
)
async def test_the_offline_model_finds_what_a_message_asks_for(
    text: str, call: tuple[str, dict[str, str]]
) -> None:
    assert await ask(text) == call


@pytest.mark.parametrize(
    "text", ["(" * MAX_MESSAGE_CHARS, "1 " * (MAX_MESSAGE_CHARS // 2), "in the background"]
)
async def test_a_message_that_asks_for_nothing_gets_a_reply(text: str) -> None:
    assert await ask(text) == (None, {})
