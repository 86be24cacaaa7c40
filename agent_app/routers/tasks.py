"""``/v1/sessions/{id}/tasks`` and ``/v1/tasks/{id}``: queue agent work and follow it."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from agent_app.deps import caller, created_id, credential, get_runtime
from agent_app.errors import IdempotencyKeyReused, NotFound
from agent_app.logs import session_id_var, task_id_var
from agent_app.routers import IDEMPOTENCY_KEY_REUSED, NOT_FOUND, V1_ERRORS, SessionId, TaskId, idempotency_key
from agent_app.schemas import Task, TaskAccepted, TaskCreate, TaskStatus

router = APIRouter(tags=["tasks"])


TaskKey = Annotated[
    str | None,
    idempotency_key(
        "Makes a retried request safe: a task accepted with this key is answered again (with its "
        "status now) and not queued twice (the same key with another input: 422)"
    ),
]


@router.post(
    "/v1/sessions/{session_id}/tasks",
    status_code=202,
    response_model=TaskAccepted,
    responses={**V1_ERRORS, **NOT_FOUND, **IDEMPOTENCY_KEY_REUSED},
)
async def post_task(
    request: Request,
    session_id: SessionId,
    body: TaskCreate,
    key_id: Annotated[str, Depends(caller)],
    key: TaskKey = None,
) -> TaskAccepted:
    session_id_var.set(session_id)
    rt = get_runtime(request)
    # 404 before anything is queued; 413 when the session has no room for the task's report
    rt.sessions.check_report_room(await rt.sessions.get(session_id, client=key_id))
    task_id = created_id(credential(request), key, session_id)
    if task_id is not None:
        task_id_var.set(task_id)
        with contextlib.suppress(NotFound):
            accepted = await rt.tasks.get(task_id, client=key_id)
            if accepted.input != body.input:
                raise IdempotencyKeyReused("this Idempotency-Key started a task with another input")
            await rt.queue_again(accepted, body.work_seconds)
            return TaskAccepted(task_id=task_id, status=accepted.status, status_url=f"/v1/tasks/{task_id}")
    task_id = await rt.enqueue(session_id, body.input, body.work_seconds, task_id, client=key_id)
    task_id_var.set(task_id)
    return TaskAccepted(task_id=task_id, status=TaskStatus.QUEUED, status_url=f"/v1/tasks/{task_id}")


@router.get("/v1/tasks/{task_id}", response_model=Task, responses={**V1_ERRORS, **NOT_FOUND})
async def get_task(request: Request, task_id: TaskId, key_id: Annotated[str, Depends(caller)]) -> Task:
    task_id_var.set(task_id)
    return await get_runtime(request).tasks.get(task_id, client=key_id)
