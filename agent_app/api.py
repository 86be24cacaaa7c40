"""The HTTP service: ``python -m agent_app.api``.

Routes stay thin: they authenticate, rate-limit and hand over to :class:`Runtime`. Every
error, whatever raised it, leaves as ``{"code", "message", "request_id"}`` so clients and
drills can match on codes rather than prose.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_app.auth import ApiKeys
from agent_app.contract import LIVENESS_PATH, METRICS_PATH, READINESS_PATH
from agent_app.errors import AgentError
from agent_app.logs import request_id_var, session_id_var, task_id_var
from agent_app.metrics import ERRORS, TURNS, TURNS_OK
from agent_app.ratelimit import RateLimiter
from agent_app.runtime import Runtime
from agent_app.schemas import (
    ID_PATTERN,
    ErrorBody,
    Health,
    MessageCreate,
    Session,
    SessionCreate,
    Task,
    TaskAccepted,
    TaskCreate,
    TaskStatus,
    TurnReply,
)

log = logging.getLogger("agent_app.api")

SessionId = Annotated[str, Path(pattern=ID_PATTERN, description="Session id")]
TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="Task id")]
_ERROR = {"model": ErrorBody}
V1_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**_ERROR, "description": "Missing or invalid API key"},
    413: {**_ERROR, "description": "Body or session history over its limit"},
    422: {**_ERROR, "description": "Malformed request"},
    429: {**_ERROR, "description": "Rate limit exceeded; see Retry-After"},
    503: {**_ERROR, "description": "A dependency is down or the instance is draining; see Retry-After"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {**_ERROR, "description": "Unknown or expired id"}}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable"}

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


def _state(request: Request) -> State:
    return request.app.state.agent


async def authorize(state: State, token: str | None) -> str:
    """Authenticate and spend one unit of the key's budget; returns the key id.

    Shared by the ``caller`` dependency and the turn fast path (``agent_app.fastpath``), so
    both admit exactly the same requests in the same order: draining, then key, then budget.
    """
    state.runtime.ensure_accepting()
    key_id = state.keys.verify(token)
    assert state.limiter is not None
    await state.limiter.hit(key_id)
    return key_id


async def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> str:
    """Authenticate and spend one unit of the key's budget; returns the key id."""
    return await authorize(_state(request), credentials.credentials if credentials else None)


async def take_turn(state: State, session_id: str, content: str) -> TurnReply:
    """One agent turn, counted by outcome; the body of ``POST /v1/sessions/{id}/messages``
    for both the FastAPI route and the fast path."""
    session_id_var.set(session_id)
    try:
        reply = await state.runtime.turn(session_id, content)
    except AgentError as exc:
        TURNS.labels(exc.code).inc()
        raise
    TURNS_OK.inc()
    return reply


def _error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, details: Any = None
) -> JSONResponse:
    ERRORS.labels(code).inc()
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_var.get()}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


async def _agent_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentError)
    return agent_error_response(exc)


def agent_error_response(exc: AgentError) -> JSONResponse:
    """The JSON error response for a domain error (also sent by the turn fast path)."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500:
        log.warning("request failed", extra={"code": exc.code, "error": exc.message})
    return _error(exc.status, exc.code, exc.message, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5])
    return _error(422, "invalid_request", f"request does not match the schema: {where}", details=details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # a body that is not even decodable is malformed too
        return _error(422, "invalid_request", f"request body is malformed: {exc.detail}")
    headers = dict(exc.headers) if exc.headers else None
    return _error(
        exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail), headers=headers
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response()


def unexpected_error_response() -> JSONResponse:
    """Log the exception being handled and answer 500 (also used by the turn fast path)."""
    log.exception("unhandled error")
    return _error(500, "internal", "internal error; the request id is in the logs")


def create_app(runtime: Runtime | None = None, keys: ApiKeys | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            runtime.start(consume=False)
        yield
        if runtime is not None:
            await runtime.close()

    app = FastAPI(
        title="Skyfleet agent app",
        version="1.0.0",
        description="Multi-turn agent sessions with tools; long work runs as async tasks through a queue.",
        lifespan=lifespan,
    )
    app.state.agent = State(runtime, keys)
    app.add_exception_handler(AgentError, _agent_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    @app.post("/v1/sessions", status_code=201, response_model=Session, responses=V1_ERRORS, tags=["sessions"])
    async def create_session(
        request: Request,
        _: Annotated[str, Depends(caller)],
        body: Annotated[SessionCreate | None, Body()] = None,
    ) -> Session:
        session = await _state(request).runtime.sessions.create((body or SessionCreate()).metadata)
        session_id_var.set(session.id)
        return session

    @app.get(
        "/v1/sessions/{session_id}",
        response_model=Session,
        responses={**V1_ERRORS, **NOT_FOUND},
        tags=["sessions"],
    )
    async def get_session(
        request: Request, session_id: SessionId, _: Annotated[str, Depends(caller)]
    ) -> Session:
        session_id_var.set(session_id)
        return await _state(request).runtime.sessions.get(session_id)

    @app.post(
        "/v1/sessions/{session_id}/messages",
        response_model=TurnReply,
        responses={**V1_ERRORS, **NOT_FOUND, 409: {**_ERROR, "description": "Too many concurrent turns"}},
        tags=["sessions"],
    )
    async def post_message(
        request: Request, session_id: SessionId, body: MessageCreate, _: Annotated[str, Depends(caller)]
    ) -> TurnReply:
        return await take_turn(_state(request), session_id, body.content)

    @app.post(
        "/v1/sessions/{session_id}/tasks",
        status_code=202,
        response_model=TaskAccepted,
        responses={**V1_ERRORS, **NOT_FOUND},
        tags=["tasks"],
    )
    async def post_task(
        request: Request, session_id: SessionId, body: TaskCreate, _: Annotated[str, Depends(caller)]
    ) -> TaskAccepted:
        session_id_var.set(session_id)
        rt = _state(request).runtime
        await rt.sessions.get(session_id)  # 404 before anything is queued
        task_id = await rt.enqueue(session_id, body.input, body.work_seconds)
        task_id_var.set(task_id)
        return TaskAccepted(task_id=task_id, status=TaskStatus.QUEUED, status_url=f"/v1/tasks/{task_id}")

    @app.get("/v1/tasks/{task_id}", response_model=Task, responses={**V1_ERRORS, **NOT_FOUND}, tags=["tasks"])
    async def get_task(request: Request, task_id: TaskId, _: Annotated[str, Depends(caller)]) -> Task:
        task_id_var.set(task_id)
        return await _state(request).runtime.tasks.get(task_id)

    @app.get(LIVENESS_PATH, response_model=Health, tags=["operations"])
    async def healthz(request: Request) -> Health:
        rt = _state(request).runtime
        return Health(status="ok", site=rt.settings.site, instance=rt.settings.instance)

    @app.get(
        READINESS_PATH,
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready: a dependency is down or draining"}},
        tags=["operations"],
    )
    async def readyz(request: Request) -> JSONResponse:
        rt = _state(request).runtime
        checks = await rt.readiness()
        ready = not any(checks.values())
        health = Health(
            status="ready" if ready else "not_ready",
            site=rt.settings.site,
            instance=rt.settings.instance,
            checks={k: v or "ok" for k, v in checks.items()},
        )
        return JSONResponse(health.model_dump(), status_code=200 if ready else 503)

    @app.get(
        METRICS_PATH,
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"}
        },
        tags=["operations"],
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def main() -> None:
    from agent_app.serve import run_api

    run_api()


if __name__ == "__main__":
    main()
