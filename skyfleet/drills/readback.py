"""Reading every session and task back after a drill, to count what was lost or run twice.

The load keeps every turn the app acknowledged (by a unique marker in the message) and every
task it accepted. After the fault is rolled back, each session's history is read through the
front door and each acknowledged marker looked up among the whole markers of its user messages
(``sf-turn-1`` is not found in ``sf-turn-12``); each task is polled until it reaches a final
status or the drain deadline passes, and one whose record cannot be read back (404, or no
answer) is lost, even if the load saw it finish. A task that ended ``failed`` is counted apart
(``tasks_failed``): it was not lost, but its work was not done. This is the RPO half of the
drill: a replicated session store must not lose an acknowledged turn, and a queue must neither
drop nor re-run work.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from skyfleet.drills.frontdoor import FrontDoor
from skyfleet.drills.measure import DataCheck
from skyfleet.drills.records import FAILED_TASK_STATUS, LoadRecording, turn_markers

_RETRYABLE = {429, 500, 502, 503, 504}


async def _get(
    client: httpx.AsyncClient, path: str, deadline: float, headers: dict[str, str]
) -> httpx.Response | None:
    """GET with retries on transient answers until the deadline; None if it never answered."""
    delay = 0.1
    last: httpx.Response | None = None
    while True:
        try:
            last = await client.get(path, headers=headers)
            if last.status_code not in _RETRYABLE:
                return last
        except httpx.HTTPError:
            last = None
        if time.monotonic() + delay > deadline:
            return last
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def _session_markers(response: httpx.Response) -> set[str] | None:
    """The turn markers in a session's user messages; None when the body is not a session."""
    try:
        body: Any = response.json()
    except ValueError:
        return None
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return None
    found: set[str] = set()
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                found |= turn_markers(content)
    return found


def _answer(response: httpx.Response | None) -> str:
    return "no answer" if response is None else str(response.status_code)


async def read_back(
    door: FrontDoor,
    recording: LoadRecording,
    *,
    fault_at: float | None,
    drain_seconds: float,
    request_timeout: float = 5.0,
    concurrency: int = 16,
) -> DataCheck:
    check = DataCheck()
    deadline = time.monotonic() + max(drain_seconds, request_timeout)
    gate = asyncio.Semaphore(concurrency)
    turns_by_session: dict[str, list] = {}
    for turn in recording.turns:
        turns_by_session.setdefault(turn.session_id, []).append(turn)
    # Each record is read with the key that created it (only that key may), so reads are spread
    # over the clients' keys as the load's were: each key is rate-limited.
    async with door.async_client(timeout=request_timeout) as client:

        async def one_session(session_id: str) -> None:
            key = door.auth(recording.client_of(session_id))
            async with gate:
                response = await _get(client, f"/v1/sessions/{session_id}", deadline, key)
            turns = turns_by_session.get(session_id, [])
            check.sessions_checked += 1
            check.turns_checked += len(turns)
            answered = response is not None and response.status_code == 200
            found = _session_markers(response) if response is not None and answered else None
            if found is None:
                check.notes.append(
                    f"session {session_id}: {'not a session' if answered else _answer(response)}"
                )
                missing = turns
                lost_session = True
            else:
                missing = [t for t in turns if t.marker not in found]
                lost_session = bool(missing)
            if lost_session:
                check.sessions_lost += 1
            check.turns_lost += len(missing)
            check.turns_lost_before_fault += sum(
                1 for t in missing if fault_at is not None and t.acked_at < fault_at
            )

        await asyncio.gather(*(one_session(s) for s in recording.sessions))

        tasks = list(recording.tasks.values())
        check.tasks_checked = len(tasks)

        # The answer to the read-back's latest read of each task: a record the load saw finish
        # that is gone now (404) or cannot be read is lost, as a session that is gone is.
        unread: dict[str, str] = {}

        async def poll(task_id: str) -> None:
            task = recording.tasks[task_id]
            async with gate:
                sent = time.time()
                key = door.auth(recording.client_of(task.session_id))
                response = await _get(client, f"/v1/tasks/{task_id}", deadline, key)
            if response is not None and response.status_code == 200:
                unread.pop(task_id, None)
                task.observe(response.json(), sent=sent, completed=time.time())
            else:
                unread[task_id] = _answer(response)

        # Every task once (a final record that changed since the load saw it is a double run),
        # then the unfinished ones until they finish or the drain deadline passes.
        await asyncio.gather(*(poll(t.task_id) for t in tasks))
        while True:
            pending = [t.task_id for t in tasks if t.final is None]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.gather(*(poll(t) for t in pending))
            if any(t.final is None for t in tasks):
                await asyncio.sleep(0.25)

    statuses: Counter[str] = Counter()
    for task in tasks:
        gone = task.task_id in unread
        statuses["unreadable" if gone else task.last_status or "unknown"] += 1
        if gone:
            check.tasks_lost += 1
            seen = "seen final by the load" if task.final is not None else f"last status {task.last_status}"
            check.notes.append(f"task {task.task_id}: {unread[task.task_id]} at read-back ({seen})")
        elif task.final is None:
            check.tasks_lost += 1
            check.notes.append(f"task {task.task_id}: last status {task.last_status}")
        elif task.completed_twice:
            check.tasks_duplicated += 1
            check.notes.append(
                f"task {task.task_id}: final record changed after it was final ({'; '.join(task.changes)})"
            )
        if not gone and task.final is not None and task.last_status == FAILED_TASK_STATUS:
            check.tasks_failed += 1
            check.notes.append(f"task {task.task_id}: failed")
        if task.attempts > 1:
            check.tasks_retried += 1
    check.task_statuses = dict(statuses)
    return check
