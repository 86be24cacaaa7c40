"""Sessions in Redis: bounded history, a TTL, and appends that never lose an update.

A session is one hash under ``skyfleet:session:{<id>}`` (inside the replicated prefix, so a
peer site's replica can carry on the conversation). Appends are compare-and-set on a
version field inside a Lua script: two concurrent turns both land, the loser re-reads and
re-applies its messages. Each message carries its turn id, so a write retried after a lost
reply is recognised instead of stored twice.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import TypeAdapter

from agent_app.cache import Cache
from agent_app.contract import REPLICATED_KEY_PREFIX
from agent_app.errors import Conflict, NotFound, TooLarge
from agent_app.schemas import Message, Session

APPEND_ATTEMPTS = 8
# One validator for the whole history: parsed and dumped in one call into pydantic-core.
_MESSAGES = TypeAdapter(list[Message])

# KEYS[1] session; ARGV: expected version, messages JSON, turns, updated_at, ttl seconds.
# Returns the new version, -1 on a version mismatch, -2 when the session does not exist.
_CAS = """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return -2 end
if v ~= ARGV[1] then return -1 end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'version', nv, 'messages', ARGV[2], 'turns', ARGV[3], 'updated_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return nv
"""


def session_key(session_id: str) -> str:
    # The hash tag keeps every key of one session in one cluster slot.
    return f"{REPLICATED_KEY_PREFIX}session:{{{session_id}}}"


def new_id() -> str:
    """128 random bits as 32 hex characters: the shape ``uuid4().hex`` had, for a fifth of
    its cost (a turn makes one, and its request id another; nothing parses them as UUIDs)."""
    return os.urandom(16).hex()


class SessionStore:
    def __init__(self, cache: Cache, *, ttl_seconds: int, max_turns: int) -> None:
        self.cache = cache
        self.ttl = ttl_seconds
        self.max_turns = max_turns
        self._cas = cache.script(_CAS)

    async def create(self, metadata: dict[str, str]) -> Session:
        now = time.time()
        session = Session(
            id=new_id(),
            created_at=now,
            updated_at=now,
            turns=0,
            max_turns=self.max_turns,
            metadata=metadata,
            messages=[],
        )
        key = session_key(session.id)
        fields = {
            "version": 0,
            "created_at": now,
            "updated_at": now,
            "turns": 0,
            "metadata": json.dumps(metadata),
            "messages": "[]",
        }

        def stage(pipe: Any) -> None:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl)

        await self.cache.write(stage)
        return session

    async def load(self, session_id: str) -> tuple[Session, str]:
        """The session and its version (for :meth:`append`'s first compare-and-set)."""
        raw: dict[str, str] = await self.cache.run(
            lambda r: r.hgetall(session_key(session_id))  # type: ignore[arg-type,return-value]
        )
        if not raw or "version" not in raw:
            raise NotFound(f"session {session_id!r} does not exist or has expired")
        session = Session(
            id=session_id,
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            turns=int(raw["turns"]),
            max_turns=self.max_turns,
            metadata=json.loads(raw.get("metadata", "{}")),
            messages=_MESSAGES.validate_json(raw["messages"]),
        )
        return session, raw["version"]

    async def get(self, session_id: str) -> Session:
        return (await self.load(session_id))[0]

    def check_room(self, session: Session) -> None:
        if session.turns >= self.max_turns:
            raise TooLarge(
                f"session {session.id!r} reached its history limit of {self.max_turns} turns; "
                "start a new session"
            )

    async def append(
        self,
        session_id: str,
        messages: list[Message],
        *,
        counts_as_turn: bool,
        loaded: tuple[Session, str] | None = None,
    ) -> Session:
        """Append ``messages`` atomically; all of them carry the same ``turn_id``.

        ``loaded`` is a copy read earlier by the caller: the first compare-and-set tries it,
        saving a round trip when no other turn came in between.
        """
        turn_id = messages[0].turn_id
        key = session_key(session_id)
        for _ in range(APPEND_ATTEMPTS):
            session, version = loaded or await self.load(session_id)
            loaded = None
            if turn_id and any(m.turn_id == turn_id for m in session.messages):
                return session  # an earlier try landed but its reply was lost
            if counts_as_turn:
                self.check_room(session)
            session.messages.extend(messages)
            session.turns += 1 if counts_as_turn else 0
            session.updated_at = time.time()
            body = _MESSAGES.dump_json(session.messages, exclude_defaults=True)
            args = [version, body, session.turns, session.updated_at, self.ttl]
            outcome = int(await self._write_cas(key, args))
            if outcome == -2:
                raise NotFound(f"session {session_id!r} does not exist or has expired")
            if outcome >= 0:
                return session
        raise Conflict(f"session {session_id!r} is too busy; retry the request", retry_after=1)

    async def _write_cas(self, key: str, args: list[Any]) -> Any:
        """Run the compare-and-set: in a pipeline with ``WAIT`` when replicas must ack it,
        else as the one command it is (a pipeline costs a turn more client-side work for
        the same single round trip and the same retry policy)."""
        if not self.cache.wait_replicas:
            return await self._cas([key], args)
        return (await self.cache.write(lambda pipe: self._cas.stage(pipe, [key], args)))[0]
