"""``/v1/sessions``: create and read sessions, and take a turn."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Request

from agent_app.deps import caller, get_runtime, get_state, take_turn
from agent_app.logs import session_id_var
from agent_app.routers import ERROR, NOT_FOUND, V1_ERRORS, SessionId
from agent_app.schemas import IDEMPOTENCY_KEY_PATTERN, MessageCreate, Session, SessionCreate, TurnReply

router = APIRouter(tags=["sessions"])
TURN_ROUTE = "/v1/sessions/{session_id}/messages"


@router.post("/v1/sessions", status_code=201, response_model=Session, responses=V1_ERRORS)
async def create_session(
    request: Request,
    _: Annotated[str, Depends(caller)],
    body: Annotated[SessionCreate | None, Body()] = None,
) -> Session:
    session = await get_runtime(request).sessions.create((body or SessionCreate()).metadata)
    session_id_var.set(session.id)
    return session


@router.get("/v1/sessions/{session_id}", response_model=Session, responses={**V1_ERRORS, **NOT_FOUND})
async def get_session(request: Request, session_id: SessionId, _: Annotated[str, Depends(caller)]) -> Session:
    session_id_var.set(session_id)
    return await get_runtime(request).sessions.get(session_id)


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "Makes a retried turn safe: a turn with this key already stored in the session is "
            "answered with its stored reply and not run again (the same key with another message: 422)"
        ),
    ),
]


@router.post(
    TURN_ROUTE,
    response_model=TurnReply,
    responses={
        **V1_ERRORS,
        **NOT_FOUND,
        409: {**ERROR, "description": "The session stayed busy with earlier turns; retry"},
        422: {**ERROR, "description": "Malformed request, or an Idempotency-Key reused for another message"},
    },
)
async def post_message(
    request: Request,
    session_id: SessionId,
    body: MessageCreate,
    key_id: Annotated[str, Depends(caller)],
    idempotency_key: IdempotencyKey = None,
) -> TurnReply:
    return await take_turn(
        get_state(request), session_id, body.content, key_id=key_id, idempotency_key=idempotency_key
    )
