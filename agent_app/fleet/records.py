"""Replicated records in this site's Redis: read one, and apply one another site sent.

A record is a Redis hash (a session or a task) with three fields the fleet reads: ``home``
(the site that writes it), ``epoch`` (raised by each takeover) and ``version`` (raised by each
write of the home). Applying is one Lua script, so each store decides alone and atomically:

- a **copy** from the home is refused when this store already has a later epoch (the sender
  is fenced: it gets this store's record back), ignored when it has the same epoch and a
  version as new or newer (a late or repeated copy), applied otherwise;
- a **takeover** (the successor raising the epoch) is applied only while this store holds
  nothing newer than what the taker based it on, so a taker with a stale copy cannot erase a
  write a majority acknowledged; a repeated takeover by the same site is accepted again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from agent_app.cache import Cache
from agent_app.fleet import Kind
from agent_app.keys import session_key, task_key

KEYS = {"session": session_key, "task": task_key}
Record = dict[str, str]
Applied = Literal["held", "later", "refused", "behind"]

# KEYS[1] the record; ARGV: mode ("copy"|"takeover"|"check"), base epoch, base version, ttl seconds,
# then the record's field/value pairs. Returns {1} when this store now holds it, {2, the
# current record} when it already holds a later write of the same epoch (the sender is behind:
# a copy reordered, or its own store lost a write), {0, the current record} when it refuses.
# A write is named by (epoch, version, wid): the same epoch and version with another write id is
# a conflict, never taken for the same write.
_APPLY = """#!lua
local exists = redis.call('EXISTS', KEYS[1]) == 1
local cur_e, cur_v, cur_w, cur_h = -1, -1, '', ''
local pending = false
if exists then
  cur_e = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') or 0
  cur_v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') or 0
  cur_w = redis.call('HGET', KEYS[1], 'wid') or ''
  cur_h = redis.call('HGET', KEYS[1], 'home') or ''
  -- this site's own takeover, not yet held by a majority: it counts as what it was based on
  local taking = redis.call('HGET', KEYS[1], 'taking')
  if taking then
    pending = true
    cur_e = cur_e - 1
    cur_h = taking
  end
end
local new = {}
for i = 5, #ARGV, 2 do new[ARGV[i]] = ARGV[i + 1] end
local ne = tonumber(new['epoch'] or '') or 0
local nv = tonumber(new['version'] or '') or 0
local nw = new['wid'] or ''
local function current() return redis.call('HGETALL', KEYS[1]) end
if ARGV[1] == 'takeover' then
  -- the same takeover again (a retry), or a later write of the new home: held
  if exists and not pending and cur_e == ne and cur_h == new['home'] then
    if cur_v > nv then return {2, current()} end
    if cur_v == nv then return {1} end
  else
    local be = tonumber(ARGV[2]) or 0
    local bv = tonumber(ARGV[3]) or 0
    if cur_e > be or (cur_e == be and cur_v > bv) then return {0, current()} end
  end
else
  if cur_e > ne then return {0, current()} end
  if cur_e == ne and cur_v == nv then
    if cur_w == nw or pending then return {1} end
    return {0, current()}
  end
  if cur_e == ne and cur_v > nv then return {2, current()} end
  -- only the write's name was sent (a check): {3} asks for the whole record (this store is behind)
  if ARGV[1] == 'check' then return {3} end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return {1}
"""


# KEYS[1] the record; ARGV: epoch, home. This site's takeover is held by a majority now: it is
# the record's home. Returns 1, or 0 when the store holds something else meanwhile.
_SETTLE = """#!lua
if redis.call('HGET', KEYS[1], 'taking') and redis.call('HGET', KEYS[1], 'epoch') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'home') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'taking')
  return 1
end
return 0
"""
# The field marking this site's own takeover, not yet held by a majority (its value: the home
# it is taken from). Only the taker's store has it; copies never carry it.
TAKING = "taking"
# What names a write: enough for another store to tell whether it holds it.
STAMP = ("home", "epoch", "version", "wid")
# On a task taken over: it is still to be queued at its new home (cleared once it is).
REQUEUE = "requeue"


def order(record: Mapping[str, str]) -> tuple[int, int]:
    """How new a record is: (epoch, version)."""
    return int(record.get("epoch", 0)), int(record.get("version", 0))


def pairs(record: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in record.items():
        out += [name, str(value)]
    return out


class LocalRecords:
    """This site's store of replicated records."""

    def __init__(self, cache: Cache, ttl: Mapping[str, int]) -> None:
        self.cache = cache
        self.ttl = dict(ttl)
        self._apply = cache.script(_APPLY)
        self._settle = cache.script(_SETTLE)

    async def read(self, kind: Kind, record_id: str) -> Record | None:
        raw: Record = await self.cache.run(lambda r: r.hgetall(KEYS[kind](record_id)))  # type: ignore[arg-type,return-value]
        return raw or None

    async def decide(
        self,
        kind: Kind,
        record_id: str,
        record: Mapping[str, str],
        *,
        takeover_from: tuple[int, int] | None = None,
        check: bool = False,
    ) -> tuple[Applied, Record | None]:
        """Apply a copy (with ``takeover_from``, a takeover based on that (epoch, version); with
        ``check``, only ask whether the write ``record`` names is held). "held"; "later" or
        "refused" with this store's record; "behind" (a check only: send the whole record)."""
        mode = "takeover" if takeover_from else "check" if check else "copy"
        be, bv = takeover_from or (0, 0)
        out = await self._apply([KEYS[kind](record_id)], [mode, be, bv, self.ttl[kind], *pairs(record)])
        code = int(out[0])
        if code == 1:
            return "held", None
        if code == 3:
            return "behind", None
        flat = [str(x) for x in out[1]]
        return ("later" if code == 2 else "refused"), dict(zip(flat[::2], flat[1::2], strict=True))

    async def apply(
        self,
        kind: Kind,
        record_id: str,
        record: Mapping[str, str],
        *,
        takeover_from: tuple[int, int] | None = None,
    ) -> tuple[bool, Record | None]:
        """Apply a copy (or a takeover): ``(True, None)`` when held, ``(False, this store's
        record)`` when not."""
        outcome, current = await self.decide(kind, record_id, record, takeover_from=takeover_from)
        return outcome == "held", current

    async def clear_flag(self, kind: Kind, record_id: str, name: str) -> None:
        await self.cache.write(lambda pipe: pipe.hdel(KEYS[kind](record_id), name))

    async def settle_takeover(self, kind: Kind, record_id: str, epoch: str, home: str) -> bool:
        return int(await self._settle([KEYS[kind](record_id)], [epoch, home])) == 1


def before_takeover(record: Mapping[str, str]) -> Record:
    """The record this site's unfinished takeover (``TAKING``) was based on."""
    base = {k: v for k, v in record.items() if k != TAKING}
    return {**base, "epoch": str(int(record["epoch"]) - 1), "home": record[TAKING]}
