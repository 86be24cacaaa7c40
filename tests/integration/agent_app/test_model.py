"""The model backends: the offline model's agent behaviour, and the OpenAI-compatible backend
against a real local HTTP server speaking chat-completions (timeouts, retries, breaker)."""

from __future__ import annotations

import os

import pybreaker
import pytest

from agent_app.agent import Agent
from agent_app.errors import DependencyDown
from agent_app.model.offline import OfflineModel
from agent_app.model.openai_compat import ModelRejected, OpenAICompatible
from agent_app.schemas import Message
from agent_app.tools import ToolError, calculator
from tests.integration.agent_app.chat_server import ChatServer


def backend(chat: ChatServer, **kwargs: float) -> OpenAICompatible:
    options = {"timeout": 1.0, "backoff_initial": 0.01, "backoff_max": 0.02, **kwargs}
    return OpenAICompatible(base_url=chat.base_url, model="test-model", api_key="sk-test", **options)  # type: ignore[arg-type]


async def test_offline_agent_uses_tools_and_history() -> None:
    agent = Agent(OfflineModel())
    history = [
        Message(role="user", content="my name is Grace", at=0),
        Message(role="assistant", content="ok", at=0),
    ]
    assert (await agent.respond(history, "what's my name?")).reply == "Your name is Grace."
    calc = await agent.respond([], "compute 2^10 - 24 please")
    assert calc.reply == "2^10 - 24 = 1000"
    assert calc.tool_calls[0].name == "calculator"
    assert (await agent.respond([], "what is a DLQ?")).tool_calls[0].name == "lookup"
    assert (await agent.respond([], "what time is it?")).reply.startswith("It is 20")
    launched: list[str] = []

    async def launch(text: str) -> str:
        launched.append(text)
        return "task123"

    background = await agent.respond([], "background: summarise the incident", launch_task=launch)
    assert launched == ["summarise the incident"]
    assert background.task_id == "task123"
    # without a launcher (the worker) the same words are answered inline
    assert (await agent.respond([], "background: summarise the incident")).task_id is None


def test_calculator_refuses_anything_but_arithmetic() -> None:
    assert calculator("7 // 2 + 0.5") == "3.5"
    for bad in ("__import__('os')", "2**1000", "1/0", "a+1"):
        with pytest.raises(ToolError):
            calculator(bad)


async def test_openai_backend_answers_and_runs_tool_calls(chat_server: ChatServer) -> None:
    model = backend(chat_server)
    try:
        result = await Agent(model).respond([], "calc 6*7")
        assert result.reply == "The tool said 42."
        assert result.tool_calls[0].result == "42"
        first = chat_server.requests[0]
        assert first["model"] == "test-model"
        assert {t["function"]["name"] for t in first["tools"]} == {"calculator", "clock", "lookup"}
        assert chat_server.requests[1]["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "42",
        }
        assert chat_server.auth_headers[0] == "Bearer sk-test"
    finally:
        await model.aclose()


async def test_openai_backend_retries_transient_failures(chat_server: ChatServer) -> None:
    chat_server.failures.extend([500, 429])
    model = backend(chat_server)
    try:
        reply = await model.complete([{"role": "user", "content": "hello"}], [])
        assert reply.content == "remote echo: hello"
        assert len(chat_server.requests) == 3
    finally:
        await model.aclose()


async def test_openai_backend_gives_up_after_bounded_retries_and_timeouts(chat_server: ChatServer) -> None:
    chat_server.failures.extend(["hang", 503, 503, 503])
    model = backend(chat_server, timeout=0.3, attempts=3)
    try:
        with pytest.raises(DependencyDown):
            await model.complete([{"role": "user", "content": "hello"}], [])
        assert len(chat_server.requests) == 3  # bounded: exactly `attempts` calls
    finally:
        await model.aclose()


async def test_openai_backend_client_errors_are_not_retried(chat_server: ChatServer) -> None:
    chat_server.failures.append(400)
    model = backend(chat_server)
    try:
        with pytest.raises(ModelRejected):
            await model.complete([{"role": "user", "content": "hello"}], [])
        assert len(chat_server.requests) == 1
        assert model.breaker.current_state == pybreaker.STATE_CLOSED
    finally:
        await model.aclose()


async def test_circuit_breaker_opens_then_fails_without_calling(chat_server: ChatServer) -> None:
    chat_server.failures.extend([503] * 10)
    model = backend(chat_server, attempts=1, breaker_fail_max=2, breaker_reset_seconds=60)
    try:
        for _ in range(2):
            with pytest.raises(DependencyDown):
                await model.complete([{"role": "user", "content": "x"}], [])
        assert model.breaker.current_state == pybreaker.STATE_OPEN
        calls = len(chat_server.requests)
        with pytest.raises(DependencyDown, match="circuit breaker is open"):
            await model.complete([{"role": "user", "content": "x"}], [])
        assert len(chat_server.requests) == calls  # the open circuit did not touch the endpoint
    finally:
        await model.aclose()


def test_tracing_is_optional_and_follows_otel_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_app import telemetry

    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    assert telemetry.setup_tracing("agent-test") is False  # no OTEL_*: off, span() is a no-op
    with telemetry.span("nothing"):
        pass
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agent-test")
    monkeypatch.setattr(telemetry, "_tracer", None)
    assert telemetry.setup_tracing("agent-test") is True
    with telemetry.span("agent.turn", session_id="s1"):
        pass
    out = capsys.readouterr().out
    assert '"name": "agent.turn"' in out and '"session_id": "s1"' in out
