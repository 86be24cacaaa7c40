"""Reading every session and task back after a drill, to count what was lost or run twice.

The load keeps every turn the app acknowledged (by a unique marker in the message) and every
task it accepted. After the fault is rolled back, each session's history is read through the
front door and each acknowledged marker looked up in it; each task is polled until it reaches a
final status or the drain deadline passes. This is the RPO half of the drill: a replicated
session store must not lose an acknowledged turn, and a queue must neither drop nor re-run work.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from skyfleet.drills.frontdoor import FrontDoor
from skyfleet.drills.measure import DataCheck
from skyfleet.drills.records import LoadRecording

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
    # Reads are spread over the clients' keys, as the load's were: each key is rate-limited.
    async with door.async_client(timeout=request_timeout) as client:

        async def one_session(number: int, session_id: str) -> None:
            async with gate:
                response = await _get(client, f"/v1/sessions/{session_id}", deadline, door.auth(number))
            turns = turns_by_session.get(session_id, [])
            check.sessions_checked += 1
            check.turns_checked += len(turns)
            if response is None or response.status_code != 200:
                code = "no answer" if response is None else response.status_code
                check.notes.append(f"session {session_id}: {code}")
                missing = turns
                lost_session = True
            else:
                missing = [t for t in turns if t.marker not in response.text]
                lost_session = bool(missing)
            if lost_session:
                check.sessions_lost += 1
            check.turns_lost += len(missing)
            check.turns_lost_before_fault += sum(
                1 for t in missing if fault_at is not None and t.acked_at < fault_at
            )

        await asyncio.gather(*(one_session(n, s) for n, s in enumerate(recording.sessions)))

        tasks = list(recording.tasks.values())
        check.tasks_checked = len(tasks)

        numbers = {t: n for n, t in enumerate(recording.tasks)}

        async def poll(task_id: str) -> None:
            task = recording.tasks[task_id]
            async with gate:
                sent = time.time()
                response = await _get(client, f"/v1/tasks/{task_id}", deadline, door.auth(numbers[task_id]))
            if response is not None and response.status_code == 200:
                task.observe(response.json(), sent=sent, completed=time.time())

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
        statuses[task.last_status or "unknown"] += 1
        if task.final is None:
            check.tasks_lost += 1
            check.notes.append(f"task {task.task_id}: last status {task.last_status}")
        elif task.completed_twice:
            check.tasks_duplicated += 1
            check.notes.append(
                f"task {task.task_id}: final record changed after it was final ({'; '.join(task.changes)})"
            )
        if task.attempts > 1:
            check.tasks_retried += 1
    check.task_statuses = dict(statuses)
    return check
