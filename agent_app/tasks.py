"""Task records in Redis: status, result, and the claim that makes delivery idempotent.

Queues deliver at least once, so a worker must *claim* a task before running it. The claim
is a Lua script on the task's hash: a finished task is reported as done (the delivery is a
duplicate: ack it), a task another worker holds a live lease on is busy (hand the delivery
back until that lease ends), anything else is claimed with a lease the worker renews while
it runs. A killed worker's lease simply expires, so its redelivered message is claimed
again. Records live under the replicated prefix, like sessions.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent_app.cache import CREATE_IF_ABSENT, Cache, create_args
from agent_app.errors import DependencyDown, Moved, NotFound
from agent_app.fleet import Replication
from agent_app.keys import CLIENT_FIELD, owned_by, task_key
from agent_app.schemas import Task, TaskStatus, ToolUse
from agent_app.sessions import new_id

# ``#!lua`` (no ``no-writes`` flag) tells Redis 7 these scripts write, so a replica refuses
# them with READONLY and a primary cut off from its replicas with NOREPLICAS, up front. Without
# it, a claim's read-only branch ("missing") would answer from a stale node as if it were true.
_SHEBANG = "#!lua\n"
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

# KEYS[1] task; ARGV: owner, lease ms, updated_at, this site ('' outside a fleet), the write's
# id. Returns {outcome, detail}; "moved" (detail: the home) when this site is not the task's
# home (another site runs it, or this site's takeover of it is not settled). The owner's own
# claim is found again, not counted twice: a claim whose reply was lost (a cache that hung
# runs the commands it holds once it resumes) must not make its owner wait out its lease.
_CLAIM = f"""{_SHEBANG}if redis.call('EXISTS', KEYS[1]) == 0 then return {{'missing', ''}} end
local home = redis.call('HGET', KEYS[1], 'home')
if ARGV[4] ~= '' and home and home ~= ARGV[4] then return {{'moved', home}} end
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[1], 'taking') == 1 then return {{'moved', home}} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'succeeded' or status == 'failed' then return {{'done', status}} end
{_NOW}
if status == 'running' and redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
  return {{'claimed', redis.call('HGET', KEYS[1], 'attempts') or '0'}}
end
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
if status == 'running' and lease_until > now then return {{'busy', tostring(lease_until - now)}} end
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[1],
  'lease_until', now + tonumber(ARGV[2]), 'updated_at', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'wid', ARGV[5])
return {{'claimed', tostring(redis.call('HINCRBY', KEYS[1], 'attempts', 1))}}
"""

# KEYS[1] task; ARGV: owner, lease ms. Returns 1 while the caller still holds the lease.
_RENEW = f"""{_SHEBANG}if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[1] then return 0 end
{_NOW}
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
return 1
"""

# KEYS[1] task; ARGV: owner, the write's id, then field/value pairs. Applies them only for the
# lease holder and drops the lease. Returns 1 when applied, also when this very write was (its
# reply lost, the cache client sent it again): the result is stored, not taken from the owner.
_SETTLE = f"""{_SHEBANG}if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[1] then
  if redis.call('HGET', KEYS[1], 'wid') == ARGV[2] then return 1 end
  return 0
end
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until')
redis.call('HSET', KEYS[1], 'wid', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
"""

# KEYS[1] task; ARGV: error, updated_at, the write's id. A task still queued and never claimed
# is marked failed (its create was answered with an error). Returns 1 when marked.
_ABANDON = f"""{_SHEBANG}if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'lease_owner') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[1], 'updated_at', ARGV[2], 'wid', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
"""

# KEYS[1] task; ARGV: error, updated_at, this site ('' outside a fleet), the write's id. A task
# whose message is dead-lettered with no live claim on it is marked failed, unless it is done,
# another worker holds a live lease on it (a duplicate message was dead-lettered, not the task),
# or another site runs it. Returns 1 when marked, 2 when the task is finished, 0 when it is not
# this site's to mark (no record, another site's), and the live lease's remaining ms as a
# negative number (its holder may yet finish: the caller may wait for it to end).
_FAIL_UNCLAIMED = f"""{_SHEBANG}local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'succeeded' or status == 'failed' then return 2 end
local home = redis.call('HGET', KEYS[1], 'home')
if ARGV[3] ~= '' and home and home ~= ARGV[3] then return 0 end
if ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[1], 'taking') == 1 then return 0 end
{_NOW}
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
if lease_until > now then return now - lease_until end
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until')
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[1], 'updated_at', ARGV[2], 'wid', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
"""

# The error of a task whose create was answered with an error because it could not be queued.
NOT_QUEUED = "not queued: "

# What became of a settled result: stored and (in a fleet) held by enough sites; stored here
# only, as too few sites of a ``sync`` fleet took the copy; or not stored, the lease lost.
Settled = Literal["stored", "unheld", "lost"]
# What a dead-lettered message's unclaimed task became (``fail_unclaimed``), or the seconds left
# of another worker's live lease on it.
Unclaimed = Literal["marked", "finished", "elsewhere"] | float

log = logging.getLogger("agent_app.tasks")


@dataclass(frozen=True)
class Claim:
    # "unheld": claimed here, but too few of the fleet's sites hold the claim (this site is cut
    # off): given back, not run. Also a finished task whose record too few sites hold: its
    # message is acknowledged only once they do.
    outcome: Literal["claimed", "done", "busy", "missing", "moved", "unheld"]
    attempts: int = 0
    busy_seconds: float = 0.0
    error: str | None = None  # a finished task's, when it failed (``finished`` only)


class TaskStore:
    def __init__(self, cache: Cache, *, ttl_seconds: int) -> None:
        self.cache = cache
        self.ttl = ttl_seconds
        # In a fleet (``agent_app.fleet``): this site, and the replicator copying each change.
        self.site = ""
        self.replicator: Replication | None = None
        self._claim = cache.script(_CLAIM)
        self._create = cache.script(CREATE_IF_ABSENT)
        self._renew = cache.script(_RENEW)
        self._settle = cache.script(_SETTLE)
        self._abandon = cache.script(_ABANDON)
        self._fail_unclaimed = cache.script(_FAIL_UNCLAIMED)

    async def create(
        self, task_id: str, session_id: str, text: str, work_seconds: float = 0, *, client: str
    ) -> Task:
        """A queued task of the API key ``client`` (its id), the key of its session."""
        now = time.time()
        task = Task(
            id=task_id,
            session_id=session_id,
            status=TaskStatus.QUEUED,
            input=text,
            created_at=now,
            updated_at=now,
        )
        key = task_key(task_id)
        fields = {
            "id": task_id,
            "session_id": session_id,
            "status": task.status.value,
            "input": text,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
            # What a site that takes the task over needs to queue it again.
            "work_seconds": work_seconds,
            "version": 1,
            CLIENT_FIELD: client,  # as a session's: only that key reads it
        }
        if self.replicator is not None:
            fields |= {"home": self.site, "epoch": 1, "wid": new_id()}

        def stage(pipe: Any) -> None:
            self._create.stage(pipe, [key], create_args(self.ttl, fields))

        (written,) = await self.cache.write(stage)
        if not written:
            # A create with the same Idempotency-Key got there first, or this one's own write
            # landed and its reply was lost (the cache retried): either way it is copied out
            # like a new one before it is answered.
            await self._published(task_id)
            return await self.get(task_id, client=client)
        if self.replicator is not None:
            await self.replicator.publish("task", task_id, {k: str(v) for k, v in fields.items()})
        return task

    async def _published(self, task_id: str) -> None:
        if self.replicator is None:
            return
        raw: dict[str, str] = await self.cache.run(lambda r: r.hgetall(task_key(task_id)))  # type: ignore[arg-type,return-value]
        if raw:
            await self.replicator.publish("task", task_id, {"home": self.site, "epoch": "1", **raw})

    async def abandon(self, task_id: str, why: str) -> None:
        """A task without a key whose create was answered with an error (it could not be queued):
        marked failed (``NOT_QUEUED``) and copied out like any write, never deleted here alone.
        The other sites hold its create already, and would otherwise keep it queued (a takeover
        would run it, for a client told it failed), and a message that reached the queue after
        all finds it settled and is not run."""
        marked = await self.cache.write(
            lambda pipe: self._abandon.stage(
                pipe, [task_key(task_id)], [NOT_QUEUED + why, time.time(), new_id()]
            )
        )
        if int(marked[0]) == 1:
            await self._published(task_id)

    async def get(self, task_id: str, *, client: str | None) -> Task:
        """The task; ``client``: the caller's key id (another key's task is not found), or None
        for the app's own reads."""
        raw: dict[str, str] = await self.cache.run(lambda r: r.hgetall(task_key(task_id)))  # type: ignore[arg-type,return-value]
        if not raw or "status" not in raw or (client is not None and not owned_by(raw, client)):
            raise NotFound(f"task {task_id!r} does not exist or has expired")
        if self.replicator is not None:
            if raw.get("taking") or raw.get("home", self.site) != self.site:
                raise Moved(raw.get("home", ""))
            raw = await self.replicator.confirm("task", task_id, {"home": self.site, "epoch": "1", **raw})
        return Task(
            id=raw["id"],
            session_id=raw["session_id"],
            status=TaskStatus(raw["status"]),
            input=raw["input"],
            result=raw.get("result"),
            tool_calls=[ToolUse.model_validate(t) for t in json.loads(raw.get("tool_calls", "[]"))],
            error=raw.get("error"),
            attempts=int(raw.get("attempts", 0)),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
        )

    async def claim(self, task_id: str, owner: str, lease_seconds: float) -> Claim:
        out = await self._claim(
            [task_key(task_id)], [owner, int(lease_seconds * 1000), time.time(), self.site, new_id()]
        )
        outcome, detail = str(out[0]), str(out[1])
        if outcome == "moved":
            return Claim("moved")
        if outcome == "claimed":
            return await self._held(task_id, owner, Claim("claimed", attempts=int(detail)))
        if outcome == "busy":
            return Claim("busy", busy_seconds=int(detail) / 1000)
        if outcome == "done":
            return await self._done(task_id)
        return Claim("missing")

    async def finished(self, task_id: str) -> Claim | None:
        """A finished task's claim outcome (``_done``, with the error of one that failed) without
        claiming it; None when the task is not finished (or has no record)."""
        fields: list[str | None] = await self.cache.run(
            lambda r: r.hmget(task_key(task_id), ["status", "error"])  # type: ignore[arg-type,return-value]
        )
        status, error = fields
        if status not in (TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value):
            return None
        done = await self._done(task_id)
        if status == TaskStatus.FAILED.value:
            return replace(done, error=error or "failed")
        return done

    async def _done(self, task_id: str) -> Claim:
        """A finished task's delivery is acknowledged only once a majority of a ``sync`` fleet
        holds the result: a worker may have stored it here and stopped, or found too few sites,
        before the copy; acknowledged then, a successor that took the task over would run it
        again."""
        if self.replicator is None or not self.replicator.sync:
            return Claim("done")
        try:
            await self._published(task_id)
        except Moved:
            return Claim("moved")
        except DependencyDown as exc:
            log.debug("finished task not held by the fleet", extra={"error": exc.message})
            return Claim("unheld")
        return Claim("done")

    async def _held(self, task_id: str, owner: str, claim: Claim) -> Claim:
        """In a ``sync`` fleet a task runs only once a majority holds its claim: a site cut off
        from the others runs nothing (as it acknowledges nothing), and a claim a newer epoch
        refuses (the task was taken over) is dropped."""
        if self.replicator is None or not self.replicator.sync:
            return claim
        try:
            await self._published(task_id)
        except Moved:
            return Claim("moved")
        except DependencyDown as exc:
            log.debug("claim not held by the fleet; given back", extra={"error": exc.message})
            # Given back as it was: queued, and this claim not counted as an attempt.
            fields = {"status": TaskStatus.QUEUED.value, "attempts": claim.attempts - 1}
            try:
                await self._settle_fields(task_id, owner, fields, publish=False)
            except DependencyDown as down:  # the claim's lease runs out instead
                log.warning("unheld claim not given back", extra={"error": down.message})
            return Claim("unheld")
        return claim

    async def renew(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        out = await self._renew([task_key(task_id)], [owner, int(lease_seconds * 1000)])
        return int(out) == 1

    async def _settle_fields(
        self, task_id: str, owner: str, fields: dict[str, Any], *, publish: bool = True
    ) -> Settled:
        args: list[Any] = [owner, new_id()]
        for name, value in {**fields, "updated_at": time.time()}.items():
            args += [name, value]
        result = await self.cache.write(lambda pipe: self._settle.stage(pipe, [task_key(task_id)], args))
        if int(result[0]) != 1:
            return "lost"
        if not publish:
            return "stored"
        # A settled task is copied before its message is acknowledged: a site that takes it
        # over then finds it done and does not run it again. A copy too few sites took leaves
        # the result stored here, "unheld": the worker acknowledges nothing until they hold it.
        try:
            await self._published(task_id)
        except DependencyDown as exc:
            log.warning(
                "settled task not copied to the fleet", extra={"task_id": task_id, "error": exc.message}
            )
            return "unheld"
        return "stored"

    async def succeed(self, task_id: str, owner: str, result: str, tool_calls: list[ToolUse]) -> Settled:
        return await self._settle_fields(
            task_id,
            owner,
            {
                "status": TaskStatus.SUCCEEDED.value,
                "result": result,
                "tool_calls": json.dumps([t.model_dump() for t in tool_calls]),
                "error": "",
            },
        )

    async def fail(self, task_id: str, owner: str, error: str, *, final: bool) -> Settled:
        status = TaskStatus.FAILED if final else TaskStatus.RETRYING
        return await self._settle_fields(task_id, owner, {"status": status.value, "error": error})

    async def release(self, task_id: str, owner: str, attempts: int) -> Settled:
        """Give the task back untouched (shutdown), its runs counted as ``attempts``: the next
        delivery may claim it at once."""
        fields = {"status": TaskStatus.QUEUED.value, "attempts": attempts}
        return await self._settle_fields(task_id, owner, fields)

    async def fail_unclaimed(self, task_id: str, error: str) -> Unclaimed:
        """Mark a task failed when its message is dead-lettered without a live claim on it, and
        copy that out like any write: "marked"; "finished" (it already was); "elsewhere" (no
        record, or another site's task); or the seconds left of another worker's live lease."""
        marked = await self.cache.write(
            lambda pipe: self._fail_unclaimed.stage(
                pipe, [task_key(task_id)], [error, time.time(), self.site, new_id()]
            )
        )
        outcome = int(marked[0])
        if outcome < 0:
            return -outcome / 1000
        if outcome == 2:
            return "finished"
        if outcome == 0:
            return "elsewhere"
        await self._published(task_id)
        return "marked"
