"""What the routes share: the per-app state, the caller check, and the turn itself.

The FastAPI routes (``agent_app.routers``) and the turn fast path (``agent_app.fastpath``)
both call :func:`authorize` and :func:`take_turn`, so they admit exactly the same requests in
the same order (draining, then key, then budget) and run the same turn.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent_app.auth import ApiKeys
from agent_app.errors import AgentError
from agent_app.logs import session_id_var
from agent_app.metrics import TURNS, TURNS_OK
from agent_app.ratelimit import RateLimiter
from agent_app.runtime import Runtime
from agent_app.schemas import TurnReply

bearer = HTTPBearer(auto_error=False, description="An API key from the platform's secret store")


class State:
    """Per-app objects; ``None`` only in the schema-only app used to write openapi.json."""

    def __init__(self, runtime: Runtime | None, keys: ApiKeys | None) -> None:
        self._runtime = runtime
        self._keys = keys
        self.limiter = (
            RateLimiter(runtime.cache, per_minute=runtime.settings.rate_limit_per_minute) if runtime else None
        )

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None, "schema-only app"
        return self._runtime

    @property
    def keys(self) -> ApiKeys:
        assert self._keys is not None, "schema-only app"
        return self._keys


def get_state(request: Request) -> State:
    return request.app.state.agent


def get_runtime(request: Request) -> Runtime:
    return get_state(request).runtime


async def authorize(state: State, token: str | None) -> str:
    """Authenticate and spend one unit of the key's budget; returns the key id."""
    state.runtime.ensure_accepting()
    key_id = state.keys.verify(token)
    assert state.limiter is not None
    await state.limiter.hit(key_id)
    return key_id


async def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> str:
    """The route dependency: :func:`authorize` with the request's bearer credential."""
    return await authorize(get_state(request), credentials.credentials if credentials else None)


def turn_id(key_id: str, session_id: str, idempotency_key: str | None) -> str | None:
    """The turn id a client's ``Idempotency-Key`` stands for: keys are the client's (the API
    key's) and the session's, so two clients choosing the same key never meet."""
    if idempotency_key is None:
        return None
    return "idem-" + _keyed(key_id, session_id, idempotency_key)


def created_id(api_key: str, idempotency_key: str | None, *within: str) -> str | None:
    """The id of the session (``within`` nothing) or the session's task (``within`` the session
    id) a create with this ``Idempotency-Key`` makes: a retried create, at any site of a fleet,
    names the same record. Made from the caller's API key itself (not its loggable id), so
    nobody without that key can name, or guess, the record, whatever the Idempotency-Key."""
    if idempotency_key is None:
        return None
    return _keyed(api_key, "session" if not within else "task", *within, idempotency_key)


def credential(request: Request) -> str:
    """The caller's API key itself, once ``caller`` accepted it (``Bearer <key>``)."""
    _, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip()


def _keyed(key_id: str, *parts: str) -> str:
    key = parts[-1].strip('"')  # the draft standard sends it as a quoted string
    material = "\0".join((key_id, *parts[:-1], key)).encode()
    return hashlib.sha256(material).hexdigest()[:32]


async def take_turn(
    state: State, session_id: str, content: str, *, key_id: str, idempotency_key: str | None = None
) -> TurnReply:
    """One agent turn, counted by outcome: the body of ``POST /v1/sessions/{id}/messages``."""
    session_id_var.set(session_id)
    try:
        reply = await state.runtime.turn(
            session_id, content, client=key_id, turn_id=turn_id(key_id, session_id, idempotency_key)
        )
    except AgentError as exc:
        TURNS.labels(exc.code).inc()
        raise
    TURNS_OK.inc()
    return reply
