"""A lost site's unfinished tasks, adopted by its successor without anyone asking for them.

A client's request for a task of a lost site makes the successor take it over
(:func:`agent_app.fleet.routing.locate`), but a task nobody asks about would wait for its site
to return. So each site lists the task copies it receives while they are unfinished, by home
(:func:`note_copy`), and every ``ADOPT_SECONDS`` the successor of each site looks at that
site's list (:func:`adopt_once`): finished or moved tasks leave it; when some are unfinished
and the site does not answer, each is taken over and queued here, as a request would do.
Runs in the api (it may publish to the queue; the worker only consumes).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

from agent_app.errors import AgentError
from agent_app.fleet import Kind
from agent_app.fleet.routing import locate
from agent_app.keys import tasks_from_key
from agent_app.runtime import Runtime

ADOPT_SECONDS = 5.0
_FINAL = ("succeeded", "failed")
log = logging.getLogger("agent_app.fleet")


async def note_copy(runtime: Runtime, kind: Kind, record_id: str, record: Mapping[str, str]) -> None:
    """Keep the list of unfinished task copies per home current with a copy just held here."""
    replicator = runtime.replicator
    if kind != "task" or replicator is None:
        return
    home = record.get("home", "")
    if not home or home == replicator.fleet.site:
        return
    key = tasks_from_key(home)
    if record.get("status") in _FINAL:
        await runtime.cache.run(lambda r: r.srem(key, record_id))
        return

    def stage(pipe: Any) -> None:
        pipe.sadd(key, record_id)
        pipe.expire(key, runtime.tasks.ttl)

    await runtime.cache.write(stage)


async def adopt_once(runtime: Runtime) -> int:
    """One look at the lists of the sites this site succeeds; returns the tasks taken over."""
    replicator = runtime.replicator
    assert replicator is not None
    fleet = replicator.fleet
    adopted = 0
    for home in fleet.peers:
        if fleet.successor(home) != fleet.site:
            continue
        key = tasks_from_key(home)
        ids: set[str] = await runtime.cache.run(lambda r, key=key: r.smembers(key))  # type: ignore[misc]
        pending: dict[str, dict[str, str]] = {}
        for task_id in sorted(ids):
            record = await replicator.local.read("task", task_id)
            if record and record.get("home") == home and record.get("status") not in _FINAL:
                pending[task_id] = record
        gone = ids - pending.keys()
        if gone:
            await runtime.cache.run(lambda r, key=key, gone=gone: r.srem(key, *gone))
        if not pending:
            continue
        # Does the home answer? One call (the peers' breaker remembers a site that does not).
        await replicator.peers.get(home, "task", next(iter(pending)))
        if replicator.peers.reachable(home):
            continue
        for task_id, record in pending.items():
            try:
                where = await locate(runtime, "task", task_id, record=record)
            except AgentError as exc:  # too few sites answer: the next look tries again
                log.warning(
                    "could not adopt a lost site's task", extra={"task_id": task_id, "error": exc.message}
                )
                break
            if where is None:
                adopted += 1
                await runtime.cache.run(lambda r, task_id=task_id, key=key: r.srem(key, task_id))
        if adopted:
            log.warning("adopted a lost site's unfinished tasks", extra={"from": home, "tasks": adopted})
    return adopted


async def adopt_forever(runtime: Runtime) -> None:
    """:func:`adopt_once` every ``ADOPT_SECONDS`` (jittered, so a site's replicas look apart)."""
    while True:
        await asyncio.sleep(ADOPT_SECONDS * random.uniform(0.8, 1.2))
        try:
            await adopt_once(runtime)
        except Exception as exc:  # a cache or peer error: the next look tries again
            log.warning("adoption pass failed", extra={"error": f"{type(exc).__name__}: {exc}"})
