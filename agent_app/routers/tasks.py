"""``/v1/sessions/{id}/tasks`` and ``/v1/tasks/{id}``: queue agent work and follow it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from agent_app.deps import caller, get_runtime
from agent_app.logs import session_id_var, task_id_var
from agent_app.routers import NOT_FOUND, V1_ERRORS, SessionId, TaskId
from agent_app.schemas import Task, TaskAccepted, TaskCreate, TaskStatus

router = APIRouter(tags=["tasks"])


@router.post(
    "/v1/sessions/{session_id}/tasks",
    status_code=202,
    response_model=TaskAccepted,
    responses={**V1_ERRORS, **NOT_FOUND},
)
async def post_task(
    request: Request, session_id: SessionId, body: TaskCreate, _: Annotated[str, Depends(caller)]
) -> TaskAccepted:
    session_id_var.set(session_id)
    rt = get_runtime(request)
    await rt.sessions.get(session_id)  # 404 before anything is queued
    task_id = await rt.enqueue(session_id, body.input, body.work_seconds)
    task_id_var.set(task_id)
    return TaskAccepted(task_id=task_id, status=TaskStatus.QUEUED, status_url=f"/v1/tasks/{task_id}")


@router.get("/v1/tasks/{task_id}", response_model=Task, responses={**V1_ERRORS, **NOT_FOUND})
async def get_task(request: Request, task_id: TaskId, _: Annotated[str, Depends(caller)]) -> Task:
    task_id_var.set(task_id)
    return await get_runtime(request).tasks.get(task_id)
