"""The HTTP routes, one small router per resource; what they share is declared here.

Routes stay thin: they authenticate (``deps.caller``), and hand over to the runtime.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path

from agent_app.schemas import ID_PATTERN, IDEMPOTENCY_KEY_PATTERN, ErrorBody

SessionId = Annotated[str, Path(pattern=ID_PATTERN, description="Session id")]
TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="Task id")]
ERROR: dict[str, Any] = {"model": ErrorBody}
V1_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**ERROR, "description": "Missing or invalid API key"},
    413: {**ERROR, "description": "Body or session history over its limit"},
    422: {**ERROR, "description": "Malformed request"},
    429: {**ERROR, "description": "Rate limit exceeded; see Retry-After"},
    503: {**ERROR, "description": "A dependency is down or the instance is draining; see Retry-After"},
}


def idempotency_key(what: str) -> Any:
    """The ``Idempotency-Key`` header of a request that is safe to send again with it."""
    return Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN, description=what)


IDEMPOTENCY_KEY_REUSED: dict[int | str, dict[str, Any]] = {
    422: {**ERROR, "description": "Malformed request, or an Idempotency-Key reused for another request"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {**ERROR, "description": "Unknown or expired id"}}
