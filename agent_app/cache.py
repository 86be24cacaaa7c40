"""The Redis connection and the one rule for using it: fail fast, never hang.

Every cache call goes through :meth:`Cache.run`, which retries connection, timeout and
READONLY errors only for ``AGENT_REDIS_FAILOVER_WAIT_SECONDS`` (the window in which
Sentinel or a managed cache promotes a replica) and then raises
:class:`~agent_app.errors.CacheDown`, which the api answers with 503. The client's own
retries are switched off so that this window is the only one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from agent_app.config import Settings
from agent_app.errors import CacheDown
from agent_app.periodic import every

log = logging.getLogger("agent_app.cache")
T = TypeVar("T")

# Errors that mean "the cache is not reachable or not the primary right now".
TRANSIENT: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ReadOnlyError,
    rexc.MasterDownError,
    asyncio.TimeoutError,
    OSError,
)
# A primary that has lost its replicas refuses writes (``min-replicas-to-write``) with this
# error; redis-py has no class for it. It is the stale side of a partition: look again.
NO_REPLICAS = "NOREPLICAS"


def _is_stale_primary(exc: BaseException) -> bool:
    """The node we hold connections to is not (or no longer) a writable primary."""
    return isinstance(exc, rexc.ReadOnlyError) or (
        isinstance(exc, rexc.ResponseError) and NO_REPLICAS in str(exc)
    )


CONNECT_TIMEOUT_SECONDS = 1.0
PING_TIMEOUT_SECONDS = 0.5
SENTINEL_ANSWER_SECONDS = 0.5
# How often a Sentinel-discovered primary is looked up again, so connections held to a node
# that is no longer the primary (a failover, a healed partition) are dropped within this.
PRIMARY_CHECK_SECONDS = 1.0


class QuorumSentinel(Sentinel):
    """Sentinel discovery that follows the majority's newest configuration.

    redis-py takes the first Sentinel whose answer looks healthy and moves it to the front.
    After a partition heals, that can be the cut-off Sentinel, still naming the old primary
    (which, cut off, took no acknowledged write): its sessions look missing and its writes
    fail. Here every Sentinel is asked at once; a majority of them must answer (so a client
    on the minority side of a partition finds no primary rather than a stale one), and the
    answer with the highest config epoch wins, as Sentinels settle it among themselves.
    """

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        async def ask(sentinel: Redis) -> dict[str, Any] | None:
            try:
                async with asyncio.timeout(SENTINEL_ANSWER_SECONDS):
                    masters = cast(dict[str, Any], await sentinel.sentinel_masters())
            except (TimeoutError, rexc.ConnectionError, rexc.TimeoutError, OSError):
                return None
            return masters.get(service_name) or {}

        # Decide as soon as a majority has answered, so a black-holed Sentinel (a partition)
        # costs no wait. A failover needs a majority's votes, so any majority includes a
        # Sentinel that took part; the newest epoch among them is the configuration to follow.
        majority = len(self.sentinels) // 2 + 1
        reached: list[dict[str, Any]] = []
        pending = {asyncio.ensure_future(ask(s)) for s in self.sentinels}
        try:
            while pending and len(reached) < majority:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                reached += [a for a in (t.result() for t in done) if a is not None]
        finally:
            for task in pending:
                task.cancel()
        if len(reached) < majority:
            raise MasterNotFoundError(
                f"No master found for {service_name!r}: {len(reached)} of {len(self.sentinels)} "
                f"Sentinels answered, {majority} needed"
            )
        healthy = [a for a in reached if a and self.check_master_state(a, service_name)]
        if not healthy:
            raise MasterNotFoundError(f"No master found for {service_name!r}: none is healthy")
        newest = max(healthy, key=lambda a: int(a.get("config-epoch", 0)))
        return str(newest["ip"]), int(newest["port"])


def connect(settings: Settings) -> Redis:
    """A client for the primary: direct from the URL, or discovered through Sentinel."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    tls = settings.redis_url.startswith("rediss://")
    common: dict[str, Any] = {
        "password": password,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        # WAIT blocks for up to its own timeout, so reads must outlast it.
        "socket_timeout": CONNECT_TIMEOUT_SECONDS + settings.redis_wait_timeout_ms / 1000,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        "health_check_interval": 0,
    }
    if tls and settings.redis_ca_file:
        common["ssl_ca_certs"] = str(settings.redis_ca_file)
    if tls:
        # The chain is always verified; only the name check may be off (see the setting).
        common["ssl_check_hostname"] = settings.redis_tls_check_hostname
    if settings.sentinel_hosts:
        if tls:
            common["ssl"] = True
        sentinel = QuorumSentinel(
            settings.sentinel_hosts,
            sentinel_kwargs={k: v for k, v in common.items() if k != "decode_responses"},
            **common,
        )
        return sentinel.master_for(settings.redis_sentinel_master, redis_class=Redis)
    return Redis.from_url(settings.redis_url, **common)


# Writes a new record (a hash) unless its key exists: 1 written, 0 it was there. Keyed creates
# (``Idempotency-Key``) sent twice at once make one record, not two with different write ids.
CREATE_IF_ABSENT = """#!lua
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


def create_args(ttl: int, fields: Mapping[str, Any]) -> list[Any]:
    """``CREATE_IF_ABSENT``'s arguments: the TTL, then field, value, field, value..."""
    return [ttl, *(item for pair in fields.items() for item in pair)]


@dataclass(frozen=True)
class Script:
    sha: str
    cache: Cache

    def stage(self, pipe: Pipeline, keys: list[str], args: list[Any]) -> None:
        """Queue the script on a pipeline (for :meth:`Cache.write`)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        return await self.cache.eval(self, keys, args)


class Cache:
    """The shared Redis client plus the bounded-retry policy around it."""

    def __init__(
        self, redis: Redis, *, failover_wait: float, wait_replicas: int, wait_timeout_ms: int
    ) -> None:
        self.redis = redis
        self.failover_wait = failover_wait
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._scripts: dict[str, str] = {}

    # Lua scripts run by SHA. redis-py's Script objects check SCRIPT EXISTS before every
    # pipeline, an extra round trip per write; here a script is (re)loaded only when the
    # server answers NOSCRIPT (first use, or a restarted or promoted server).

    def script(self, source: str) -> Script:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return Script(sha, self)

    async def _load_scripts(self, redis: Redis) -> None:
        for source in self._scripts.values():
            await redis.script_load(source)

    async def _with_scripts(self, redis: Redis, op: Callable[[Redis], Awaitable[T]]) -> T:
        try:
            return await op(redis)
        except rexc.NoScriptError:
            await self._load_scripts(redis)
            return await op(redis)

    async def eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        async def call(redis: Redis) -> Any:
            return await redis.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[misc]

        return await self.run(lambda r: self._with_scripts(r, call))

    @classmethod
    def from_settings(cls, settings: Settings) -> Cache:
        return cls(
            connect(settings),
            failover_wait=settings.redis_failover_wait_seconds,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )

    async def run(self, op: Callable[[Redis], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.failover_wait
        delay = 0.05
        while True:
            try:
                return await op(self.redis)
            except (*TRANSIENT, rexc.ResponseError) as exc:
                stale = _is_stale_primary(exc)
                if not stale and not isinstance(exc, TRANSIENT):
                    raise
                if stale:
                    # A replica, or a primary cut off from its replicas: drop the connections,
                    # so the next try looks the primary up again.
                    await self.redis.connection_pool.disconnect()
                if loop.time() + delay > deadline:
                    log.warning("cache unavailable", extra={"error": repr(exc)})
                    raise CacheDown("the session cache is unavailable; retry shortly", retry_after=1) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)

    async def write(self, stage: Callable[[Pipeline], object]) -> list[Any]:
        """Run staged commands on one connection, then WAIT for replicas when configured.

        WAIT only covers writes made on its own connection, hence the single pipeline. A write
        that did not reach ``AGENT_REDIS_WAIT_REPLICAS`` replicas is not acknowledged (503).
        """

        async def once(redis: Redis) -> list[Any]:
            pipe = redis.pipeline(transaction=False)
            stage(pipe)
            if self.wait_replicas:
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            return await pipe.execute()

        async def op(redis: Redis) -> list[Any]:
            results = await self._with_scripts(redis, once)
            if not self.wait_replicas:
                return results
            acked = int(results[-1])
            if acked < self.wait_replicas:
                raise CacheDown(
                    f"write reached {acked} of {self.wait_replicas} replicas in {self.wait_timeout_ms} ms",
                    retry_after=1,
                )
            return results[:-1]

        return await self.run(op)

    async def refresh(self) -> None:
        """Drop idle connections, so the next command looks the primary up again (Sentinel)."""
        await self.redis.connection_pool.disconnect(inuse_connections=False)

    async def watch_primary(self) -> None:
        """With Sentinel, look the primary up every second and drop every connection held to
        another node, in use or not: reads on a demoted or cut-off node would succeed, stale."""
        pool = self.redis.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return

        async def look() -> None:
            try:
                address = await pool.sentinel_manager.discover_master(pool.service_name)
            except Exception as exc:  # no majority or no Sentinel: commands fail and retry anyway
                log.debug("primary lookup failed", extra={"error": repr(exc)})
                return
            held = pool.master_address
            if held is not None and tuple(held) != tuple(address):
                log.warning(
                    "cache primary moved; reconnecting",
                    extra={"from": f"{held[0]}:{held[1]}", "to": f"{address[0]}:{address[1]}"},
                )
                pool.master_address = address
                await pool.disconnect(inuse_connections=True)

        await every(lambda: PRIMARY_CHECK_SECONDS, look)

    async def ping(self) -> None:
        async with asyncio.timeout(PING_TIMEOUT_SECONDS):
            await self.redis.ping()  # type: ignore[misc]

    async def close(self) -> None:
        await self.redis.aclose()
