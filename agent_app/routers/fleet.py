"""``/internal/v1/fleet``: what the fleet's other sites call (``agent_app.fleet.peers``).

Not part of the client API (absent from its OpenAPI document) and refused without the fleet's
own key; client keys are worthless here.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from agent_app.contract import FLEET_KEY_HEADER, FLEET_PATH_PREFIX
from agent_app.deps import get_runtime
from agent_app.errors import DependencyDown, NotFound, Unauthorized
from agent_app.fleet import Kind
from agent_app.fleet.adoption import note_copy
from agent_app.fleet.replicator import Replicator
from agent_app.routers import SessionId, TaskId
from agent_app.schemas import Message

log = logging.getLogger("agent_app.fleet")
Plural = Literal["sessions", "tasks"]


class Copy(BaseModel):
    # A record is a flat hash; its three fleet fields must be there.
    record: dict[str, str] = Field(min_length=3)
    takeover_from: tuple[int, int] | None = None
    # Only the write's name (home, epoch, version, wid): is it held here? 404 asks for all of it.
    check: bool = False


FleetKey = Annotated[str | None, Header(alias=FLEET_KEY_HEADER)]


def _replicator(request: Request, key: FleetKey = None) -> Replicator:
    replicator = get_runtime(request).replicator
    if replicator is None:
        raise NotFound("this site belongs to no fleet")
    if key is None or not hmac.compare_digest(key.encode(), replicator.fleet.key.encode()):
        raise Unauthorized("missing or wrong fleet key")
    return replicator


# Every route takes the fleet's key before its body's fields are validated: a caller without it
# learns nothing of what the routes accept (only a body that is not JSON at all is refused
# first, by FastAPI's parser). A route that needs the replicator takes it as ``Member``: FastAPI
# resolves the dependency once per request.
router = APIRouter(prefix=FLEET_PATH_PREFIX, include_in_schema=False, dependencies=[Depends(_replicator)])
Member = Annotated[Replicator, Depends(_replicator)]


@router.put("/{plural}/{record_id}")
async def put_copy(
    request: Request, plural: Plural, record_id: TaskId, body: Copy, replicator: Member
) -> JSONResponse:
    missing = {"home", "epoch", "version"} - body.record.keys()
    if missing:
        return JSONResponse(
            {"code": "invalid_request", "message": f"record lacks {sorted(missing)}"}, status_code=422
        )
    kind: Kind = "session" if plural == "sessions" else "task"
    outcome, current = await replicator.local.decide(
        kind, record_id, body.record, takeover_from=body.takeover_from, check=body.check
    )
    if outcome == "behind":  # only the write's name came: ask for the whole record
        return JSONResponse({"held": False}, status_code=404)
    if outcome == "refused":
        return JSONResponse({"held": False, "record": current}, status_code=409)
    if not body.check:
        try:
            await note_copy(get_runtime(request), kind, record_id, body.record)
        except DependencyDown as exc:  # the copy is held: only the adoption list missed it
            log.warning("task copy not listed for adoption", extra={"error": exc.message})
    # "later": held, and this site holds a later write of the same epoch (the sender is behind).
    return JSONResponse({"held": True, **({"record": current} if outcome == "later" else {})})


@router.get("/{plural}/{record_id}")
async def get_copy(plural: Plural, record_id: TaskId, replicator: Member) -> JSONResponse:
    record = await replicator.local.read("session" if plural == "sessions" else "task", record_id)
    if record is None:
        raise NotFound(f"no copy of {plural[:-1]} {record_id!r} here")
    return JSONResponse({"record": record})


class Appends(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=4)


@router.post("/sessions/{record_id}/appends")
async def post_appends(request: Request, record_id: SessionId, body: Appends) -> JSONResponse:
    """A task's report, from a worker at another site, appended here at the session's home."""
    session = await get_runtime(request).sessions.append(record_id, body.messages, counts_as_turn=False)
    return JSONResponse({"version": session.turns})
