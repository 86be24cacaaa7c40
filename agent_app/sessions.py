"""Sessions in Redis: bounded history, a TTL, turns taken one at a time, appends that never
lose an update.

A session is one hash under ``skyfleet:session:{<id>}`` (inside the replicated prefix, so a
peer site's replica can carry on the conversation). A turn holds the session's turn lock
(``agent:turn:{<id>}``, a lease renewed while the turn runs) from reading the history to
storing its messages, so concurrent turns on one session run one after another and each sees
the ones before it; taking the lock and reading the history is one script, and so are storing
and releasing it, so a turn costs no extra round trip. Appends are compare-and-set on a version
field: a write that does not hold the lock (a task's report, or a turn whose lease ran out)
re-reads and re-applies its messages rather than overwrite another. Each message carries its
turn id, so a write retried after a lost reply is recognised instead of stored twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from pydantic import TypeAdapter

from agent_app.cache import CREATE_IF_ABSENT, Cache, create_args
from agent_app.errors import Conflict, Moved, NotFound, Superseded, TooLarge
from agent_app.fleet import Replication
from agent_app.keys import CLIENT_FIELD, owned_by, session_key
from agent_app.schemas import Message, Session

APPEND_ATTEMPTS = 8
# The turn lock's lease, renewed every third of it while the turn runs; a process that dies
# mid-turn holds the session for at most this.
TURN_LEASE_SECONDS = 3.0
# How long a turn waits for the turns ahead of it on the same session before it answers 409.
TURN_WAIT_SECONDS = 15.0
# One validator for the whole history: parsed and dumped in one call into pydantic-core.
_MESSAGES = TypeAdapter(list[Message])

# KEYS[1] session, KEYS[2] its turn lock (optional); ARGV: expected version, messages JSON,
# turns, updated_at, ttl seconds, this site ('' outside a fleet), the write's id, lock token
# (with KEYS[2]). Returns the new version, -1 on a version mismatch, -2 when the session does
# not exist, -3 when this site is not its home (another site is, or this site's takeover is
# not settled). Releases the lock when the write landed or the session is gone.
_CAS = """
local v = redis.call('HGET', KEYS[1], 'version')
local function unlock()
  if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[8] then redis.call('DEL', KEYS[2]) end
end
if not v then unlock(); return -2 end
local home = redis.call('HGET', KEYS[1], 'home')
if ARGV[6] and ARGV[6] ~= '' then
  if (home and home ~= ARGV[6]) or redis.call('HEXISTS', KEYS[1], 'taking') == 1 then return -3 end
end
if v ~= ARGV[1] then return -1 end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'version', nv, 'messages', ARGV[2], 'turns', ARGV[3], 'updated_at', ARGV[4])
if ARGV[7] and ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'wid', ARGV[7]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
unlock()
return nv
"""

# KEYS[1] session, KEYS[2] its turn lock; ARGV: token, lease ms, this site ('' outside a
# fleet), the caller's key id. Returns {1, {}} when the session does not exist or is another
# key's, {0, ms left} while another turn holds the lock, {2, home} when another site is its
# home now, else takes the lock and returns {1, the session hash as field/value pairs}.
# ``#!lua`` (a writing script): a replica refuses it up front, like the task scripts.
_LOCK_AND_LOAD = """#!lua
if redis.call('EXISTS', KEYS[1]) == 0 then return {1, {}} end
local owner = redis.call('HGET', KEYS[1], 'client')
if owner and owner ~= ARGV[4] then return {1, {}} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[2])} end
local home = redis.call('HGET', KEYS[1], 'home')
local taking = redis.call('HGET', KEYS[1], 'taking')
if ARGV[3] ~= '' and taking then return {2, taking} end
if ARGV[3] ~= '' and home and home ~= ARGV[3] then return {2, home} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] turn lock; ARGV: token, lease ms (0: release). Returns 1 while the token holds it.
_LEASE = """#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def turn_lock_key(session_id: str) -> str:
    # Transient (outside the replicated prefix), in the session's slot.
    return f"agent:turn:{{{session_id}}}"


def new_id() -> str:
    """128 random bits as 32 hex characters: the shape ``uuid4().hex`` had, for a fifth of
    its cost (a turn makes one, and its request id another; nothing parses them as UUIDs)."""
    return os.urandom(16).hex()


class TurnLock:
    """The session's turn lock while one turn holds it: renewed every third of its lease
    until :meth:`release` (a no-op once the append that stored the turn released it)."""

    def __init__(self, store: SessionStore, session_id: str, token: str) -> None:
        self.store = store
        self.session_id = session_id
        self.token = token
        self.held = True
        self._renewal: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._schedule()

    def _schedule(self) -> None:
        # A timer, not a task per turn: most turns end before the first renewal is due.
        self._renewal = asyncio.get_running_loop().call_later(TURN_LEASE_SECONDS / 3, self._renew)

    def _renew(self) -> None:
        self._renewing = asyncio.ensure_future(self._extend())

    async def _extend(self) -> None:
        try:
            self.held = await self.store.lease(self.session_id, self.token, TURN_LEASE_SECONDS)
        except Exception:  # the append's compare-and-set still keeps every update
            self.held = False
        if self.held:
            self._schedule()

    async def release(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
        if self._renewing is not None:
            self._renewing.cancel()
        if self.held:
            self.held = False
            await self.store.lease(self.session_id, self.token, 0)


# A session's messages: its turns' (a few each) and its tasks' reports, which are no turns, at
# most this many per turn allowed: what bounds a session that takes task after task.
MESSAGES_PER_TURN = 6


class SessionStore:
    def __init__(self, cache: Cache, *, ttl_seconds: int, max_turns: int) -> None:
        self.cache = cache
        self.ttl = ttl_seconds
        self.max_turns = max_turns
        self.max_messages = max_turns * MESSAGES_PER_TURN
        # In a fleet: this site's name and the replicator that copies each write to the others
        # (``agent_app.fleet``); a session is written only at its home.
        self.site = ""
        self.replicator: Replication | None = None
        self._cas = cache.script(_CAS)
        self._create = cache.script(CREATE_IF_ABSENT)
        self._lock_and_load = cache.script(_LOCK_AND_LOAD)
        self._lease = cache.script(_LEASE)

    async def create(
        self, metadata: dict[str, str], session_id: str | None = None, *, client: str
    ) -> Session:
        """A new session of the API key ``client`` (its id): ``session_id`` (a keyed create's,
        ``deps.created_id``) or a random id."""
        now = time.time()
        session = Session(
            id=session_id or new_id(),
            created_at=now,
            updated_at=now,
            turns=0,
            max_turns=self.max_turns,
            metadata=metadata,
            messages=[],
        )
        key = session_key(session.id)
        fields: dict[str, Any] = {
            "version": 0,
            "created_at": now,
            "updated_at": now,
            "turns": 0,
            "metadata": json.dumps(metadata),
            "messages": "[]",
            # The key it belongs to: only that key reads it or takes turns in it (copies carry it).
            CLIENT_FIELD: client,
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
            if self.replicator is not None:
                await self._published(session.id)
            return await self.get(session.id, client=client)
        if self.replicator is not None:
            await self.replicator.publish("session", session.id, {k: str(v) for k, v in fields.items()})
        return session

    async def _published(self, session_id: str) -> None:
        """Copy the session as stored now to the fleet's other sites."""
        assert self.replicator is not None
        raw: dict[str, str] = await self.cache.run(lambda r: r.hgetall(session_key(session_id)))  # type: ignore[arg-type,return-value]
        if raw:
            await self.replicator.publish("session", session_id, await self._homed(session_id, raw))

    async def _homed(self, session_id: str, raw: dict[str, str]) -> dict[str, str]:
        """A session stored before this site joined a fleet is this site's: say so (once)."""
        if "home" in raw and "epoch" in raw:
            return raw
        fields = {"home": self.site, "epoch": "1"}

        def stage(pipe: Any) -> None:
            for name, value in fields.items():
                pipe.hsetnx(session_key(session_id), name, value)

        await self.cache.write(stage)
        return {**fields, **raw}

    async def load(self, session_id: str, *, client: str | None) -> tuple[Session, str]:
        """The session and its version (for :meth:`append`'s first compare-and-set). ``client``:
        the caller's key id (another key's session is not found), or None for the app's own
        writes (a task's report)."""
        raw: dict[str, str] = await self.cache.run(
            lambda r: r.hgetall(session_key(session_id))  # type: ignore[arg-type,return-value]
        )
        if client is not None and not owned_by(raw, client):
            raw = {}  # answered as a session that does not exist: an id proves nothing
        if raw and self.replicator is not None:
            if raw.get("taking") or raw.get("home", self.site) != self.site:
                raise Moved(raw.get("home", ""))
            raw = await self.replicator.confirm("session", session_id, await self._homed(session_id, raw))
        return self._parse(session_id, raw), raw["version"]

    async def peek(self, session_id: str) -> list[Message]:
        """This site's copy of the history, unconfirmed (context for a task); [] when none."""
        raw: dict[str, str] = await self.cache.run(
            lambda r: r.hgetall(session_key(session_id))  # type: ignore[arg-type,return-value]
        )
        return _MESSAGES.validate_json(raw["messages"]) if raw.get("messages") else []

    async def begin_turn(self, session_id: str, *, client: str) -> tuple[Session, str, TurnLock]:
        """Wait for the session's turn (at most ``TURN_WAIT_SECONDS``, else 409), then the
        session, its version and the lock, which the caller releases. A session of another
        key than ``client`` is not found."""
        token = new_id()
        keys = [session_key(session_id), turn_lock_key(session_id)]
        lease_ms = int(TURN_LEASE_SECONDS * 1000)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TURN_WAIT_SECONDS
        pause = 0.002
        while True:
            got, detail = await self._lock_and_load(keys, [token, lease_ms, self.site, client])
            if int(got) == 2:
                raise Moved(str(detail))
            if int(got) == 1:
                raw = dict(zip(detail[::2], detail[1::2], strict=True))
                lock = TurnLock(self, session_id, token)
                if raw and self.replicator is not None and self.replicator.sync:
                    # Never run a turn on (or replay from) a copy no majority holds: a home cut
                    # off and back, or one whose last write never reached the others.
                    try:
                        raw = await self.replicator.confirm(
                            "session", session_id, await self._homed(session_id, raw)
                        )
                    except BaseException:
                        await lock.release()
                        raise
                session = self._parse(session_id, raw)
                return session, raw["version"], lock
            left = deadline - loop.time()
            if left <= 0:
                raise Conflict(
                    f"session {session_id!r} stayed busy with other turns for {TURN_WAIT_SECONDS:g} s; "
                    "retry the request (with the same Idempotency-Key)",
                    retry_after=1,
                )
            # Look again soon (a turn takes milliseconds), backing off; never past the
            # holder's lease or the wait's end.
            await asyncio.sleep(min(pause, max(int(detail), 1) / 1000, left))
            pause = min(pause * 2, 0.05)

    async def lease(self, session_id: str, token: str, seconds: float) -> bool:
        """Extend the turn lock ``token`` holds, or release it (``seconds`` 0)."""
        return int(await self._lease([turn_lock_key(session_id)], [token, int(seconds * 1000)])) == 1

    def _parse(self, session_id: str, raw: dict[str, str]) -> Session:
        if not raw or "version" not in raw:
            raise NotFound(f"session {session_id!r} does not exist or has expired")
        return Session(
            id=session_id,
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            turns=int(raw["turns"]),
            max_turns=self.max_turns,
            metadata=json.loads(raw.get("metadata", "{}")),
            messages=_MESSAGES.validate_json(raw["messages"]),
        )

    async def get(self, session_id: str, *, client: str | None) -> Session:
        return (await self.load(session_id, client=client))[0]

    def check_room(self, session: Session) -> None:
        if session.turns >= self.max_turns:
            raise TooLarge(
                f"session {session.id!r} reached its history limit of {self.max_turns} turns; "
                "start a new session"
            )

    def check_report_room(self, session: Session, adding: int = 1) -> None:
        """Room for ``adding`` more messages that are no turn (a task's report)."""
        if len(session.messages) + adding > self.max_messages:
            raise TooLarge(
                f"session {session.id!r} reached its history limit of {self.max_messages} messages "
                "(its turns and its tasks' reports); start a new session"
            )

    async def append(
        self,
        session_id: str,
        messages: list[Message],
        *,
        counts_as_turn: bool,
        loaded: tuple[Session, str] | None = None,
        lock: TurnLock | None = None,
    ) -> Session:
        """Append ``messages`` atomically; all of them carry the same ``turn_id``.

        ``loaded`` is a copy read earlier by the caller: the first compare-and-set tries it,
        saving a round trip when no other write came in between. ``lock``, the turn lock the
        caller holds, is released by the write that lands.
        """
        turn_id = messages[0].turn_id
        keys = [session_key(session_id)]
        # Copied synchronously, a turn keeps its lock until the copies hold it, so the next
        # turn's copy never overtakes it.
        if lock is not None and not (self.replicator is not None and self.replicator.sync):
            keys.append(turn_lock_key(session_id))
        for _ in range(APPEND_ATTEMPTS):
            session, version = loaded or await self.load(session_id, client=None)
            loaded = None
            if turn_id and any(m.turn_id == turn_id for m in session.messages):
                return session  # an earlier try landed but its reply was lost
            if counts_as_turn:
                self.check_room(session)
            else:
                self.check_report_room(session, len(messages))
            session.messages.extend(messages)
            session.turns += 1 if counts_as_turn else 0
            session.updated_at = time.time()
            body = _MESSAGES.dump_json(session.messages, exclude_defaults=True)
            args = [version, body, session.turns, session.updated_at, self.ttl, self.site, new_id()]
            if len(keys) > 1 and lock is not None:
                args.append(lock.token)
            outcome = int(await self._write_cas(keys, args))
            if outcome == -2:
                raise NotFound(f"session {session_id!r} does not exist or has expired")
            if outcome == -3:
                raise Moved(str(await self.cache.run(lambda r: r.hget(session_key(session_id), "home"))))
            if outcome >= 0:
                if len(keys) > 1 and lock is not None:
                    lock.held = False  # released by the script
                if self.replicator is not None:
                    await self._copied(session_id, messages)
                return session
        raise Conflict(f"session {session_id!r} is too busy; retry the request", retry_after=1)

    async def _copied(self, session_id: str, messages: list[Message]) -> None:
        """Copy an append out (``sync``: held by a majority). A later write here that takes no
        turn lock (a task's report) can be copied out first: the others then refuse this copy as
        older, though the record they hold carries it. The append stands when the record a
        majority holds now carries its messages."""
        try:
            await self._published(session_id)
        except Superseded:
            held, _ = await self.load(session_id, client=None)  # confirmed: what a majority holds
            if not all(m in held.messages for m in messages):
                raise

    async def _write_cas(self, keys: list[str], args: list[Any]) -> Any:
        """Run the compare-and-set: in a pipeline with ``WAIT`` when replicas must ack it,
        else as the one command it is (a pipeline costs a turn more client-side work for
        the same single round trip and the same retry policy)."""
        if not self.cache.wait_replicas:
            return await self._cas(keys, args)
        return (await self.cache.write(lambda pipe: self._cas.stage(pipe, keys, args)))[0]
