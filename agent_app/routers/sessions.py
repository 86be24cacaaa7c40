"""``/v1/sessions``: create and read sessions, and take a turn."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from agent_app.deps import caller, created_id, credential, get_runtime, get_state, take_turn
from agent_app.errors import IdempotencyKeyReused, NotFound
from agent_app.logs import session_id_var
from agent_app.routers import ERROR, IDEMPOTENCY_KEY_REUSED, NOT_FOUND, V1_ERRORS, SessionId, idempotency_key
from agent_app.schemas import MessageCreate, Session, SessionCreate, TurnReply

router = APIRouter(tags=["sessions"])
TURN_ROUTE = "/v1/sessions/{session_id}/messages"


SessionKey = Annotated[
    str | None,
    idempotency_key(
        "Makes a retried create safe: a session created with this key is answered again, at any "
        "site of a fleet, and not made twice (the same key with other metadata: 422)"
    ),
]


@router.post(
    "/v1/sessions", status_code=201, response_model=Session, responses={**V1_ERRORS, **IDEMPOTENCY_KEY_REUSED}
)
async def create_session(
    request: Request,
    key_id: Annotated[str, Depends(caller)],
    body: Annotated[SessionCreate | None, Body()] = None,
    key: SessionKey = None,
) -> Session:
    sessions = get_runtime(request).sessions
    metadata = (body or SessionCreate()).metadata
    session_id = created_id(credential(request), key)
    if session_id is not None:
        session_id_var.set(session_id)
        with contextlib.suppress(NotFound):
            made = await sessions.get(session_id, client=key_id)
            if made.metadata != metadata:
                raise IdempotencyKeyReused("this Idempotency-Key created a session with other metadata")
            return made
    session = await sessions.create(metadata, session_id, client=key_id)
    session_id_var.set(session.id)
    return session


@router.get("/v1/sessions/{session_id}", response_model=Session, responses={**V1_ERRORS, **NOT_FOUND})
async def get_session(
    request: Request, session_id: SessionId, key_id: Annotated[str, Depends(caller)]
) -> Session:
    session_id_var.set(session_id)
    return await get_runtime(request).sessions.get(session_id, client=key_id)


IdempotencyKey = Annotated[
    str | None,
    idempotency_key(
        "Makes a retried turn safe: a turn with this key already stored in the session is "
        "answered with its stored reply and not run again (the same key with another message: 422)"
    ),
]


@router.post(
    TURN_ROUTE,
    response_model=TurnReply,
    responses={
        **V1_ERRORS,
        **NOT_FOUND,
        409: {**ERROR, "description": "The session stayed busy with earlier turns; retry"},
        **IDEMPOTENCY_KEY_REUSED,
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
