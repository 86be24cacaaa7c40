"""A backend for any OpenAI-compatible ``/chat/completions`` endpoint.

Three layers keep a slow or failing endpoint from taking the app down with it: httpx
timeouts bound each call, tenacity retries transient failures (transport errors, 429, 5xx)
a few times with jittered backoff, and a pybreaker circuit opens after repeated failures
so later turns fail in microseconds (503) instead of queueing behind a dead endpoint.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pybreaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from agent_app.errors import AgentError, DependencyDown
from agent_app.model.base import ChatMessage, ModelReply, ToolCall

log = logging.getLogger("agent_app.model")


class Transient(Exception):
    """A failure worth retrying: the endpoint may answer next time."""


class ModelRejected(AgentError):
    """The endpoint answered with a client error; retrying would not help."""

    status = 502
    code = "model_error"


class OpenAICompatible:
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float = 30.0,
        connect_timeout: float = 3.0,
        attempts: int = 3,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
        breaker_fail_max: int = 5,
        breaker_reset_seconds: float = 30.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )
        self.model = model
        self._attempts = attempts
        self._wait = wait_exponential_jitter(
            multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        # Client errors say nothing about the endpoint's health, so they do not trip the circuit.
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=breaker_fail_max,
            reset_timeout=breaker_reset_seconds,
            exclude=[ModelRejected],
            name="model",
        )

    async def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post("chat/completions", json=payload)
        except httpx.TransportError as exc:
            raise Transient(f"model endpoint unreachable: {exc!r}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise Transient(f"model endpoint answered {response.status_code}")
        if response.status_code >= 400:
            # The endpoint's words (an account, a masked key) go to the log, not to the client.
            log.warning(
                "model endpoint rejected the request",
                extra={"status": response.status_code, "body": response.text[:200]},
            )
            raise ModelRejected(f"model endpoint rejected the request ({response.status_code})")
        try:
            return response.json()
        except ValueError:
            raise Transient("model endpoint sent a body that is not JSON") from None

    async def _post_with_retries(self, payload: dict[str, Any]) -> dict[str, Any]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type(Transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._post(payload)
        raise AssertionError("unreachable: tenacity reraises")

    async def complete(self, messages: list[ChatMessage], tools: list[dict[str, Any]]) -> ModelReply:
        payload: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools:
            payload["tools"] = tools
        try:
            with self.breaker.calling():
                data = await self._post_with_retries(payload)
        except pybreaker.CircuitBreakerError:
            raise DependencyDown(
                "the model backend is failing; its circuit breaker is open", retry_after=5
            ) from None
        except Transient as exc:
            log.warning("model backend unavailable", extra={"error": str(exc)})
            raise DependencyDown("the model backend is unavailable", retry_after=2) from exc
        return _parse(data)

    async def aclose(self) -> None:
        await self._client.aclose()


def _parse(data: dict[str, Any]) -> ModelReply:
    try:
        message = data["choices"][0]["message"]
        calls = [
            ToolCall(
                id=str(c["id"]),
                name=str(c["function"]["name"]),
                arguments=json.loads(c["function"].get("arguments") or "{}"),
            )
            for c in message.get("tool_calls") or []
        ]
        return ModelReply(message.get("content"), calls)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelRejected(f"model endpoint sent an unexpected body: {exc!r}") from None
