"""Every error leaves as ``{"code", "message", "request_id"[, "details"]}``, whatever raised it.

The exception handlers the FastAPI app installs, and the responses they build, which the turn
fast path (``agent_app.fastpath``) sends too, so clients and drills can match on codes
rather than prose whichever path answered.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_app.contract import HOME_HEADER
from agent_app.errors import AgentError, Moved
from agent_app.logs import request_id_var
from agent_app.metrics import ERRORS

log = logging.getLogger("agent_app.api")
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable"}


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, details: Any = None
) -> JSONResponse:
    ERRORS.labels(code).inc()
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_var.get()}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def agent_error_response(exc: AgentError) -> JSONResponse:
    """The JSON error response for a domain error."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, Moved):
        headers[HOME_HEADER] = exc.home
    if exc.status >= 500:
        log.warning("request failed", extra={"code": exc.code, "error": exc.message})
    return error_response(exc.status, exc.code, exc.message, headers=headers)


def unexpected_error_response() -> JSONResponse:
    """Log the exception being handled and answer 500."""
    log.exception("unhandled error")
    return error_response(500, "internal", "internal error; the request id is in the logs")


async def _agent_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentError)
    return agent_error_response(exc)


def _printable(part: int | str) -> int | str:
    """A location part as the error body can carry it: a client's key may hold a lone
    surrogate (a JSON escape), which UTF-8 cannot encode; it is shown escaped."""
    if isinstance(part, str):
        return part.encode("utf-8", "backslashreplace").decode("utf-8")
    return part


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": [_printable(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5])
    return error_response(
        422, "invalid_request", f"request does not match the schema: {where}", details=details
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # a body that is not even decodable is malformed too
        return error_response(422, "invalid_request", f"request body is malformed: {exc.detail}")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(
        exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail), headers=headers
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response()


def install(app: FastAPI) -> None:
    app.add_exception_handler(AgentError, _agent_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
