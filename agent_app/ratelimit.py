"""Per-key request budgets kept in Redis, so every replica of a site spends the same budget.

A fixed one-minute window per key, counted by an INCR whose first hit sets the expiry in
the same script. Counters sit outside the replicated prefix: losing them in a failover only
resets a minute of budget.
"""

from __future__ import annotations

import math

from agent_app.cache import Cache
from agent_app.errors import RateLimited

WINDOW_MS = 60_000

# KEYS[1] counter; ARGV[1] window ms. Returns {count, ms left in the window}.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


class RateLimiter:
    def __init__(self, cache: Cache, *, per_minute: int) -> None:
        self.cache = cache
        self.per_minute = per_minute
        self._hit = cache.script(_HIT)

    async def hit(self, key_id: str) -> None:
        # The script call applies the cache's retry policy itself (Cache.eval).
        count, ttl_ms = await self._hit(keys=[f"agent:ratelimit:{key_id}"], args=[WINDOW_MS])
        if int(count) > self.per_minute:
            raise RateLimited(
                f"rate limit of {self.per_minute} requests per minute exceeded for this API key",
                retry_after=max(1, math.ceil(int(ttl_ms) / 1000)),
            )
