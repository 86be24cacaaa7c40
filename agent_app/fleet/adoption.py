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

import logging
import random
from collections.abc import Mapping
from typing import Any

from agent_app.errors import AgentError
from agent_app.fleet import Kind
from agent_app.fleet.records import REQUEUE
from agent_app.fleet.routing import locate
from agent_app.keys import tasks_from_key
from agent_app.periodic import every
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
        pending: dict[str, dict[str, str]] = {}  # still the lost site's
        unqueued: dict[str, dict[str, str]] = {}  # taken over here, not queued yet
        for task_id in sorted(ids):
            record = await replicator.local.read("task", task_id)
            if not record or record.get("status") in _FINAL:
                continue
            if record.get("home") == home:
                pending[task_id] = record
            elif record.get("home") == fleet.site and record.get(REQUEUE):
                unqueued[task_id] = record
        gone = ids - pending.keys() - unqueued.keys()
        if gone:
            await runtime.cache.run(lambda r, key=key, gone=gone: r.srem(key, *gone))
        for task_id, record in unqueued.items():  # a queue that refused earlier: try again
            adopted += await _adopt(runtime, key, task_id, record)
        if not pending:
            continue
        # Does the home answer? One call (the peers' breaker remembers a site that does not).
        await replicator.peers.get(home, "task", next(iter(pending)))
        if replicator.peers.reachable(home):
            continue
        for task_id, record in pending.items():
            adopted += await _adopt(runtime, key, task_id, record)
        if adopted:
            log.warning("adopted a lost site's unfinished tasks", extra={"from": home, "tasks": adopted})
    return adopted


async def _adopt(runtime: Runtime, key: str, task_id: str, record: dict[str, str]) -> int:
    """Take one task over and queue it here (``locate`` does both); 1 when it is queued here.
    It stays listed until then: a takeover whose queueing failed is queued at the next look."""
    try:
        where = await locate(runtime, "task", task_id, record=record)
    except AgentError as exc:  # too few sites answer, or the queue refused: the next look retries
        log.warning("could not adopt a lost site's task", extra={"task_id": task_id, "error": exc.message})
        return 0
    if where is not None:  # another site is its home now
        return 0
    await runtime.cache.run(lambda r: r.srem(key, task_id))
    return 1


async def adopt_forever(runtime: Runtime) -> None:
    """:func:`adopt_once` every ``ADOPT_SECONDS`` (jittered, so a site's replicas look apart)."""

    async def look() -> None:
        try:
            await adopt_once(runtime)
        except Exception as exc:  # a cache or peer error: the next look tries again
            log.warning("adoption pass failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    await every(lambda: ADOPT_SECONDS * random.uniform(0.8, 1.2), look)
