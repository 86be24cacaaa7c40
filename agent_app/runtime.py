"""What one api or worker process holds: the cache, the stores, the queue, the agent, and
whether it is draining.

The queue connects in the background and keeps retrying, so a process whose broker is
down at start-up still comes up (its /readyz says 503) and recovers by itself, the same way
Redis does. Readiness checks are bounded so a probe never hangs on a dead dependency.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from agent_app.agent import Agent
from agent_app.cache import Cache
from agent_app.config import Settings
from agent_app.errors import DependencyDown, Draining, IdempotencyKeyReused
from agent_app.fleet.replicator import fleet_replicator
from agent_app.metrics import DRAINING, TASKS_ENQUEUED
from agent_app.model import backend_from_settings
from agent_app.model.base import ModelBackend
from agent_app.periodic import stop_if_cancelled
from agent_app.process import ShutdownClock, within
from agent_app.queues import TaskQueue, open_queue
from agent_app.queues.base import QueueUnavailable
from agent_app.schemas import Message, Session, Task, TaskMessage, TaskStatus, TurnReply
from agent_app.sessions import SessionStore, new_id
from agent_app.tasks import TaskStore
from agent_app.telemetry import span

log = logging.getLogger("agent_app.runtime")


def _queue_down(exc: Exception) -> DependencyDown:
    """The client's answer when the queue failed: the broker's own words (its ARNs, subjects,
    project) go to the log, not to the client."""
    log.warning("task queue unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
    return DependencyDown("the task queue is unavailable", retry_after=2)


QUEUE_RETRY_SECONDS = 1.0
# How long closing the clients may take when no shutdown deadline is running (tests, tools).
CLOSE_SECONDS = 5.0
# What closing leaves of the deadline, for the process's own exit.
EXIT_MARGIN_SECONDS = 0.25
TASK_TTL_FLOOR_SECONDS = 86_400


class Runtime:
    def __init__(self, settings: Settings, *, model: ModelBackend | None = None) -> None:
        self.settings = settings
        self.cache = Cache.from_settings(settings)
        self.sessions = SessionStore(
            self.cache, ttl_seconds=settings.session_ttl_seconds, max_turns=settings.session_max_turns
        )
        self.tasks = TaskStore(
            self.cache, ttl_seconds=max(settings.session_ttl_seconds, TASK_TTL_FLOOR_SECONDS)
        )
        self.replicator = fleet_replicator(
            settings, self.cache, {"session": self.sessions.ttl, "task": self.tasks.ttl}
        )
        for store in (self.sessions, self.tasks):
            store.site, store.replicator = (settings.site, self.replicator) if self.replicator else ("", None)
        self.queue: TaskQueue = open_queue(settings)
        self.model = model or backend_from_settings(settings)
        self.agent = Agent(self.model)
        self.draining = False
        self.shutdown = ShutdownClock(settings.shutdown_grace_seconds)
        self.queue_connected = asyncio.Event()
        self._queue_error = "connecting"
        self._connector: asyncio.Task[None] | None = None
        self._primary_watch: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, *, consume: bool) -> None:
        self._connector = asyncio.create_task(self._connect_queue(consume=consume))
        self._primary_watch = asyncio.create_task(self.cache.watch_primary())

    async def _connect_queue(self, *, consume: bool) -> None:
        while True:
            stop_if_cancelled()  # not connecting again after close
            try:
                await self.queue.start(consume=consume)
            except Exception as exc:  # any broker or network error: retry, never crash the process
                self._queue_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "queue not reachable yet", extra={"queue": self.queue.kind, "error": self._queue_error}
                )
                try:
                    await self.queue.close()
                except Exception:
                    log.debug("closing a half-open queue client failed", exc_info=True)
                await asyncio.sleep(QUEUE_RETRY_SECONDS)
                continue
            self._queue_error = ""
            self.queue_connected.set()
            log.info("queue connected", extra={"queue": self.queue.kind})
            return

    def begin_drain(self) -> None:
        """Start draining, and the shutdown deadline (its watchdog included)."""
        if not self.draining:
            self.draining = True
            self.shutdown.start()
            DRAINING.set(1)
            log.info(
                "draining: readiness fails, no new work is taken",
                extra={"grace_s": self.shutdown.grace},
            )

    async def close(self) -> None:
        """Close every client at once, within what the shutdown deadline leaves: a client
        whose server is gone (a reconnect loop, a flush that cannot land) is abandoned."""
        for background in (self._connector, self._primary_watch):
            if background is not None:
                background.cancel()

        async def close(closer: Callable[[], Awaitable[None]]) -> None:
            try:
                await closer()
            except Exception:
                log.warning("error while closing", exc_info=True)

        bound = self.shutdown.left(EXIT_MARGIN_SECONDS) if self.shutdown.started else CLOSE_SECONDS
        closers = (self.queue.close, self.model.aclose, self.cache.close)
        if self.replicator is not None:
            closers += (self.replicator.close,)
        await within(asyncio.gather(*(close(c) for c in closers)), bound, "closing the clients")

    async def readiness(self) -> dict[str, str]:
        """Check every dependency concurrently; the empty-string value means healthy."""

        async def redis() -> str:
            try:
                await self.cache.ping()
                return ""
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"

        async def queue() -> str:
            if not self.queue_connected.is_set():
                return self._queue_error or "connecting"
            try:
                await self.queue.check()
                return ""
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"

        redis_state, queue_state = await asyncio.gather(redis(), queue())
        return {"draining": "yes" if self.draining else "", "redis": redis_state, "queue": queue_state}

    # --- the api's operations ------------------------------------------------------------

    def ensure_accepting(self) -> None:
        if self.draining:
            raise Draining("this instance is shutting down; retry on another", retry_after=1)

    async def enqueue(
        self, session_id: str, text: str, work_seconds: float = 0, task_id: str | None = None, *, client: str
    ) -> str:
        """Store and queue a new task. ``task_id``: a keyed create's (``deps.created_id``) or a
        keyed turn's; its record is kept when queueing fails, since the publish may have reached
        the broker after all (the broker then drops a second one with the same id) or another
        request with the key may have answered it already: the client's retry queues it
        (``queue_again``). A task without a key that could not be queued is marked failed, as
        its create is answered (``TaskStore.abandon``)."""
        keyed = task_id is not None
        task_id = task_id or new_id()
        await self.tasks.create(task_id, session_id, text, work_seconds, client=client)
        message = TaskMessage(
            task_id=task_id,
            session_id=session_id,
            input=text,
            work_seconds=work_seconds,
            enqueued_at=time.time(),
        )
        try:
            await self._publish(message.model_dump_json().encode(), task_id)
        except QueueUnavailable as exc:
            if not keyed:
                try:
                    await self.tasks.abandon(task_id, str(exc))
                except DependencyDown:
                    log.warning("could not mark an unqueued task failed", extra={"task_id": task_id})
            raise _queue_down(exc) from exc
        TASKS_ENQUEUED.inc()
        return task_id

    async def queue_again(self, task: Task, work_seconds: float) -> None:
        """A keyed create sent again for a task still queued: queue it again, in case the first
        try stored it but could not queue it. A second message is harmless: the queue
        deduplicates by task id where it can, and the worker claims by it."""
        if task.status == TaskStatus.QUEUED:
            fields = {"id": task.id, "session_id": task.session_id, "input": task.input}
            await self.requeue({**fields, "work_seconds": str(work_seconds)})

    async def requeue(self, record: Mapping[str, str]) -> None:
        """Queue again, here, a task this site took over from a lost one (unless it is done).
        The queue deduplicates by task id and the worker claims by it: it runs once in effect."""
        if record.get("status") in (TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value):
            return
        message = TaskMessage(
            task_id=record["id"],
            session_id=record["session_id"],
            input=record["input"],
            work_seconds=float(record.get("work_seconds", 0)),
            enqueued_at=time.time(),
        )
        try:
            await self._publish(message.model_dump_json().encode(), record["id"])
        except QueueUnavailable as exc:
            raise _queue_down(exc) from exc

    async def _publish(self, body: bytes, task_id: str) -> None:
        """Publish, riding out a broker failover for at most the configured wait. The broker
        deduplicates by task id, so a retry after a lost acknowledgement enqueues nothing twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.queue_failover_wait_seconds
        delay = 0.05
        while True:
            try:
                if not self.queue_connected.is_set():
                    raise QueueUnavailable(self._queue_error or "connecting")
                await self.queue.publish(body, task_id=task_id)
                return
            except QueueUnavailable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def turn(self, session_id: str, text: str, *, client: str, turn_id: str | None = None) -> TurnReply:
        """One turn, taken when the session's earlier turns are done (``SessionStore.begin_turn``).

        ``turn_id`` comes from the client's ``Idempotency-Key``: when a turn with that id is
        stored already (a retry after a lost reply, a double submit), its reply is returned
        and nothing runs again; the same key with another message is refused. ``client``: the
        caller's API key id; the session and the task the turn starts are that key's.
        """
        session, version, lock = await self.sessions.begin_turn(session_id, client=client)
        # A keyed turn's task is named by the turn: if the turn runs again (its first run's
        # write failed, or was fenced after the task was queued), it names the same task.
        task_id = turn_task_id(session_id, turn_id) if turn_id is not None else None
        try:
            if turn_id is not None and (done := replay(session, turn_id, text)) is not None:
                return done
            self.sessions.check_room(session)
            history = list(session.messages)
            with span("agent.turn", session_id=session_id):
                result = await self.agent.respond(
                    history,
                    text,
                    launch_task=lambda task_input: self.enqueue(
                        session_id, task_input, task_id=task_id, client=client
                    ),
                )
            turn_id = turn_id or new_id()
            now = time.time()
            reply = Message(
                role="assistant",
                content=result.reply,
                at=now,
                turn_id=turn_id,
                tool_calls=result.tool_calls,
                task_id=result.task_id,
            )
            stored = await self.sessions.append(
                session_id,
                [Message(role="user", content=text, at=now, turn_id=turn_id), reply],
                counts_as_turn=True,
                loaded=(session, version),
                lock=lock,
            )
        finally:
            await lock.release()
        return TurnReply(session_id=session_id, turn=stored.turns, reply=reply, task_id=result.task_id)


def turn_task_id(session_id: str, turn_id: str) -> str:
    """The id of the task a keyed turn starts: the same for every run of that turn."""
    return hashlib.sha256(f"turn-task\0{session_id}\0{turn_id}".encode()).hexdigest()[:32]


def replay(session: Session, turn_id: str, text: str) -> TurnReply | None:
    """The stored reply of turn ``turn_id``, if that turn is in the history."""
    turns = 0
    for i, message in enumerate(session.messages):
        turns += message.role == "user"
        if message.turn_id != turn_id:
            continue
        if message.content != text:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for another message in this session; use a new key"
            )
        reply = session.messages[i + 1]
        return TurnReply(session_id=session.id, turn=turns, reply=reply, task_id=reply.task_id)
    return None
