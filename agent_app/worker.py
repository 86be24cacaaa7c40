"""The queue worker: ``python -m agent_app.worker``.

Delivery is at least once, so every message goes through the same steps: parse it (a
malformed body is a poison message), claim the task in Redis (a finished task means a
duplicate delivery: ack without running), run the agent while a heartbeat extends both the
broker's lease and the Redis claim, store the result, and only then ack. A failure hands
the message back with backoff; on the broker's last attempt it is dead-lettered and the
task marked failed. An outage of the cache or of the fleet is not a failure: the delivery is
held until it ends. On SIGTERM the worker stops receiving at once, lets running tasks finish
within ``AGENT_SHUTDOWN_GRACE_SECONDS`` less a close reserve, and hands the rest back for
immediate redelivery without using up an attempt (``Delivery.send_copy``); the grace period
bounds the whole shutdown (``process.ShutdownClock``).

The worker also serves /healthz, /readyz and /metrics on ``AGENT_PORT`` for probes and
Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
import uuid
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from agent_app.contract import LIVENESS_PATH, METRICS_PATH, READINESS_PATH
from agent_app.errors import CacheDown, DependencyDown, FleetUnavailable, NotFound, TooLarge
from agent_app.fleet.routing import HOPS, locate
from agent_app.http import ASGIApp, Receive, Scope, Send
from agent_app.logs import session_id_var, task_id_var
from agent_app.metrics import IN_FLIGHT, QUEUE_LAG, TASKS
from agent_app.periodic import cancel_requested, every
from agent_app.process import bootstrap, exit_now, within
from agent_app.queues.base import RECEIVE_WAIT_SECONDS, Delivery, QueueTimeout
from agent_app.runtime import EXIT_MARGIN_SECONDS, Runtime
from agent_app.schemas import Message, TaskMessage
from agent_app.tasks import Claim, Settled
from agent_app.telemetry import setup_tracing, span

log = logging.getLogger("agent_app.worker")
MAX_RETRY_DELAY_SECONDS = 30
QUEUE_ERROR_PAUSE_SECONDS = 1.0
RECORD_POLL_SECONDS = 0.5
RECEIVE_END_SECONDS = 2.0  # beyond the receive's own wait, for its answer to arrive


def outage(exc: BaseException) -> bool:
    """The cache, or too few of the fleet's sites, did not answer: it stops every task alike, so
    it is waited out, not counted against a task's attempts (a model's timeout is the task's)."""
    return isinstance(exc, CacheDown | FleetUnavailable)


def retry_delay(attempt: int) -> float:
    """Backoff before a failed task is offered again: 0, 1, 2, 4, 8 ... seconds."""
    return 0.0 if attempt <= 1 else float(min(MAX_RETRY_DELAY_SECONDS, 2 ** (attempt - 2)))


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.lease = runtime.settings.task_lease_seconds
        self.concurrency = runtime.settings.worker_concurrency
        self.record_wait = runtime.settings.task_record_wait_seconds
        self.instance = runtime.settings.instance
        self.stopping = asyncio.Event()
        self.receiving_closed = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()

    def begin_drain(self) -> None:
        if self.stopping.is_set():
            return
        self.rt.begin_drain()
        self.stopping.set()

    async def run(self) -> None:
        self.rt.start(consume=True)
        # Every wait below also wakes on SIGTERM: a worker with all its slots busy (long
        # tasks) or a receive stuck on a broker that does not answer must still stop taking
        # work at once and drain within the grace period.
        stop = asyncio.create_task(self.stopping.wait())
        late: list[Delivery] = []  # received as SIGTERM came: handed back once receiving stopped
        try:
            connected = asyncio.create_task(self.rt.queue_connected.wait())
            await asyncio.wait({connected, stop}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            if self.rt.queue.max_attempts is None and not self.stopping.is_set():
                log.warning("the queue has no dead-letter policy: poison messages will be retried forever")
            while not self.stopping.is_set():
                free = self.concurrency - len(self.running)
                if free <= 0:
                    await asyncio.wait({*self.running, stop}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                deliveries = await self._receive(free, stop)
                for delivery in deliveries:
                    if self.stopping.is_set():
                        late.append(delivery)
                        continue
                    task = asyncio.create_task(self.handle(delivery))
                    self.running.add(task)
                    task.add_done_callback(self.running.discard)
        finally:
            stop.cancel()
            await self._stop_receiving()
        await asyncio.gather(*(self._hand_back(d) for d in late))
        await self._drain()

    async def _stop_receiving(self) -> None:
        """Close the receive side before anything is handed back: a broker that still holds a
        receive of this worker's (a JetStream pull cut short) would hand a released message
        straight back to it, as it exits, and use up one of the message's attempts."""
        clock = self.rt.shutdown
        await within(
            self._quietly(self.rt.queue.stop_receiving(), "stop receiving"),
            clock.left(clock.reserve),
            "closing the receive side",
        )
        self.receiving_closed.set()

    async def _receive(self, free: int, stop: asyncio.Task[bool]) -> list[Delivery]:
        """Up to ``free`` deliveries. A receive under way when SIGTERM arrives is let end (its
        wait is short), and what it got is handed back: cut short, the messages the broker has
        handed it meanwhile would each use up an attempt and come back only when their lease
        runs out. One that still hangs after that is cut short all the same."""
        receive = asyncio.create_task(self.rt.queue.receive(free, RECEIVE_WAIT_SECONDS))
        await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not receive.done():
            await asyncio.wait({receive}, timeout=RECEIVE_WAIT_SECONDS + RECEIVE_END_SECONDS)
        if not receive.done():
            receive.cancel()
        try:
            return await receive
        except asyncio.CancelledError:
            if not receive.cancelled():
                raise  # this task itself is being cancelled
            return []
        except Exception as exc:
            log.warning("receive failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.wait({stop}, timeout=QUEUE_ERROR_PAUSE_SECONDS)
            return []

    async def _hand_back(self, delivery: Delivery) -> None:
        clock = self.rt.shutdown
        await within(self.receiving_closed.wait(), clock.left(clock.reserve), "closing the receive side")
        await within(self._give_back(delivery), clock.left(clock.reserve), "a hand-back")

    async def _give_back(self, delivery: Delivery) -> None:
        """Hand a delivery back on shutdown without using up an attempt (``Delivery.send_copy``):
        this worker ran it no further than any other could. Released as it is (an attempt used
        up) when the copy was refused, or once the task's free hand-backs are used up. A copy
        that may have been sent (no answer), or an ack that failed after it, leaves the delivery
        to its lease: released at once, it could come back as the reserved delivery before the
        copy is claimed, and fail a task that was never run."""
        if delivery.handed_back:
            return  # a drain's cancel came while it was being handed back
        delivery.handed_back = True
        if not delivery.free_handback:
            await self._quietly(delivery.release(0), "release on shutdown")
            return
        try:
            await delivery.send_copy()
        except QueueTimeout as exc:
            log.warning("requeue on shutdown not answered; left to its lease", extra={"error": repr(exc)})
            return
        except Exception as exc:
            log.warning("requeue on shutdown refused; released instead", extra={"error": repr(exc)})
            await self._quietly(delivery.release(0), "release on shutdown")
            return
        await self._quietly(delivery.ack(), "ack of a requeued delivery")

    async def _drain(self) -> None:
        """Running tasks get the grace period less the close reserve; then the rest are
        cancelled, which hands each back (claim dropped, message released), within half the
        reserve. A task that cannot be handed back in time (its broker or cache gone) is left
        to its lease, which runs out and makes it deliverable again."""
        clock = self.rt.shutdown
        if self.running:
            log.info("draining running tasks", extra={"running": len(self.running), "grace_s": clock.grace})
            _, pending = await asyncio.wait(set(self.running), timeout=clock.left(clock.reserve))
            for task in pending:
                task.cancel()
            if pending:
                _, stuck = await asyncio.wait(pending, timeout=clock.left(clock.reserve / 2))
                if stuck:
                    log.warning(
                        "tasks not handed back in time; their leases will run out",
                        extra={"tasks": len(stuck)},
                    )
        log.info("worker drained")

    async def _quietly(self, coro: object, what: str) -> bool:
        """Await ``coro``, logging a failure instead of raising it: True when it succeeded."""
        try:
            await coro  # type: ignore[misc]
        except Exception as exc:
            log.warning(f"{what} failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return False
        return True

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        IN_FLIGHT.inc()
        try:
            yield
        finally:
            IN_FLIGHT.dec()

    async def handle(self, delivery: Delivery) -> None:
        owner = f"{self.instance}:{uuid.uuid4().hex[:12]}"
        with self._tracked():
            try:
                message = TaskMessage.model_validate_json(delivery.body)
            except ValidationError as exc:
                await self._failed(
                    delivery, None, f"malformed task message: {exc.errors()[0]['msg']}", claimed=False
                )
                return
            task_id_var.set(message.task_id)
            session_id_var.set(message.session_id)
            if delivery.max_attempts is not None and delivery.attempt > delivery.max_attempts:
                await self._last_run_lost(delivery, message)
                return
            if delivery.attempt == 1 and delivery.handbacks == 0:  # the first delivery of all
                QUEUE_LAG.observe(max(0.0, time.time() - message.enqueued_at))
            while True:  # once, or again after an outage cut its run short
                claim = await self._claim(delivery, message, owner)
                if claim is None:
                    return  # handed back or dead-lettered
                if claim.outcome == "moved":
                    TASKS.labels("moved").inc()
                    log.info("task taken over by another site of the fleet; acked without running it")
                    await self._quietly(delivery.ack(), "ack moved task")
                    return
                if claim.outcome == "done":
                    TASKS.labels("duplicate").inc()
                    log.info("duplicate delivery of a finished task; acked without running it")
                    await self._quietly(delivery.ack(), "ack duplicate")
                    return
                if claim.outcome == "busy":
                    TASKS.labels("busy").inc()
                    # Back once that lease has ended (a margin for clocks and whole seconds):
                    # each delivery uses up an attempt.
                    await self._quietly(delivery.release(claim.busy_seconds + 1), "release busy duplicate")
                    return
                heartbeat = asyncio.create_task(self._heartbeat(delivery, message.task_id, owner))
                try:
                    settled = await self._execute(message, owner)
                except asyncio.CancelledError:
                    await asyncio.shield(self._release(delivery, message.task_id, owner, claim.attempts))
                    raise
                except Exception as exc:
                    if outage(exc):
                        # Not the task's failure: held like a claim until the outage ends, then
                        # run again under the same claim (its writes are idempotent by task).
                        TASKS.labels("interrupted").inc()
                        log.warning(
                            "outage during the run; holding it to run again", extra={"error": repr(exc)}
                        )
                        continue
                    await self._failed(
                        delivery, message, f"{type(exc).__name__}: {exc}", claimed=True, owner=owner
                    )
                    return
                finally:
                    heartbeat.cancel()
                await self._settled(delivery, message, owner, settled)
                return

    async def _last_run_lost(self, delivery: Delivery, message: TaskMessage) -> None:
        """The broker's reserved delivery (agent_app.queues.base): the last run's worker was lost,
        or stopped after it stored the result. A task left unfinished is marked failed and the
        message dead-lettered. While that run's lease is live (its worker may be slow, not lost,
        and finish), the delivery is held, no delivery used up, until the lease ends. A task
        already failed is dead-lettered too: its worker was lost, or its dead-lettering failed,
        before the message left the queue (a send that went through with a removal that did not
        leaves a second copy in the dead-letter queue)."""
        error = "worker lost during the last attempt"
        keeper: asyncio.Task[None] | None = None
        try:
            while not await self._settled_finished(delivery, message):
                try:
                    outcome = await self.rt.tasks.fail_unclaimed(message.task_id, error)
                except Exception as exc:
                    if not outage(exc):
                        log.warning("task record not marked failed", extra={"error": repr(exc)})
                        await self._failed(delivery, message, error, claimed=False)  # tries once more
                        return
                    outcome = RECORD_POLL_SECONDS  # an outage is waited out, as a claim's is
                if outcome in ("marked", "elsewhere"):
                    await self._failed(delivery, message, error, claimed=False, recorded=True)
                    return
                # Held: another run's lease is live, or the task is finished but not yet held by
                # the fleet (or settled since it was read): looked at again once that may change.
                wait = RECORD_POLL_SECONDS if outcome == "finished" else float(outcome)
                if keeper is None:
                    why = "the last run's lease is live"
                    if outcome == "finished":
                        why = "the task is finished, not yet held by the fleet"
                    log.info("holding the reserved delivery", extra={"why": why})
                    keeper = asyncio.create_task(self._heartbeat(delivery, at_once=True))
                with contextlib.suppress(TimeoutError):
                    # A margin for clocks and the lease's own rounding.
                    async with asyncio.timeout(wait + RECORD_POLL_SECONDS):
                        await self.stopping.wait()
                if self.stopping.is_set():
                    await self._hand_back(delivery)
                    return
        finally:
            if keeper is not None:
                keeper.cancel()

    async def _settled_finished(self, delivery: Delivery, message: TaskMessage) -> bool:
        """Settle a delivery whose task is finished (and held by the fleet): acknowledged, or
        dead-lettered with its error when it failed here. True if so."""
        try:
            finished = await self.rt.tasks.finished(message.task_id)
        except Exception as exc:
            log.warning("task record not read", extra={"error": repr(exc)})
            return False
        if finished is None or finished.outcome not in ("done", "moved"):
            return False
        if finished.outcome == "done" and finished.error is not None:
            if await self._quietly(delivery.dead_letter(finished.error), "dead-letter"):
                TASKS.labels("dead_lettered").inc()
            log.error("failed task dead-lettered at its reserved delivery", extra={"error": finished.error})
            return True
        TASKS.labels("duplicate").inc()
        await self._quietly(delivery.ack(), "ack finished task")
        return True

    async def _settled(self, delivery: Delivery, message: TaskMessage, owner: str, settled: Settled) -> None:
        """Acknowledge a run whose result is stored, and held by the fleet where it has one."""
        if settled == "lost":
            # Another delivery claimed the task once this lease ran out: acknowledging would take
            # the message from under that run, and a task whose run then dies would never end.
            TASKS.labels("lease_lost").inc()
            log.warning("lease lost before the result was stored; the delivery is left to its lease")
            return
        if settled == "unheld" and not await self._held_by_fleet(delivery, message, owner):
            return
        TASKS.labels("succeeded").inc()
        log.info("task succeeded", extra={"attempt": delivery.attempt})
        # The result is stored: an ack that fails leaves a duplicate delivery, which finds the
        # task done; it is not a failed task.
        await self._quietly(delivery.ack(), "ack")

    async def _held_by_fleet(self, delivery: Delivery, message: TaskMessage, owner: str) -> bool:
        """A settled task stored here only: hold the delivery (no attempt used up) until the fleet
        holds the record too (the claim finds it done and copies it out). False when it was
        handed back instead: its next delivery does the same."""
        claim = await self._claim(delivery, message, owner)
        if claim is None:
            return False
        if claim.outcome in ("done", "moved"):
            return True
        if claim.outcome == "claimed":  # its own lease found again: the record is not settled
            released = self.rt.tasks.release(message.task_id, owner, claim.attempts)
            await self._quietly(released, "release claim")
        await self._quietly(delivery.release(0), "release")
        return False

    async def _claim(self, delivery: Delivery, message: TaskMessage, owner: str) -> Claim | None:
        """Claim the task, holding the delivery (lease extended, no attempt used up) and looking
        again on a fresh view of the primary while it cannot be claimed yet:
        - while an outage lasts (the cache does not answer or, in a fleet, too few sites hold
          the claim): it stops every task alike, so the delivery waits for its end. Handed back,
          each try would use up one of the broker's attempts, and an outage longer than those
          would dead-letter tasks never run. The worker's slots fill, and it takes no more;
        - while the record is not visible, for up to ``AGENT_TASK_RECORD_WAIT_SECONDS`` (from the
          end of an outage). The api stores the record, acknowledged by a replica, before it
          publishes, so a missing record is first of all a stale view (a node cut off or just
          demoted), not a bad message. One that stays missing is an orphan and is dead-lettered.
        Any other error hands the delivery back after that wait.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.record_wait
        keeper: asyncio.Task[None] | None = None
        error: Exception | None = None
        in_outage = False
        try:
            while True:
                if keeper is not None and self.stopping.is_set():
                    # Shutting down while held: handed back now, not when the drain gives up
                    # (once this worker receives no more, or the message would come back to it).
                    await self._hand_back(delivery)
                    return None
                try:
                    claim = await self.rt.tasks.claim(message.task_id, owner, self.lease)
                    error = None
                    if claim.outcome == "unheld":  # this site is cut off from its fleet
                        error = FleetUnavailable("too few of the fleet's sites hold the task")
                    elif claim.outcome != "missing":
                        if in_outage:
                            log.info(
                                "outage over; claiming", extra={"held_s": round(loop.time() - started, 1)}
                            )
                        return claim
                except Exception as exc:
                    error = exc
                if error is not None and outage(error):
                    in_outage = True
                    deadline = loop.time() + self.record_wait
                elif loop.time() + RECORD_POLL_SECONDS > deadline:
                    break
                if keeper is None:
                    TASKS.labels("waited").inc()
                    log.info(
                        "task cannot be claimed yet; holding the delivery",
                        extra={
                            "error": repr(error) if error else "no task record",
                            "wait_s": self.record_wait,
                        },
                    )
                    keeper = asyncio.create_task(self._heartbeat(delivery, at_once=True))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), RECORD_POLL_SECONDS)
                await self._quietly(self.rt.cache.refresh(), "reconnect to the cache")
        except asyncio.CancelledError:
            await asyncio.shield(self._give_back(delivery))
            raise
        finally:
            if keeper is not None:
                keeper.cancel()
        if error is not None:
            await self._quietly(delivery.release(retry_delay(2)), "release")
            log.warning("cannot claim task; handed back", extra={"error": str(error)})
            return None
        reason = f"no task record for this message after {self.record_wait:g} s"
        if await self._quietly(delivery.dead_letter(reason), "dead-letter"):
            TASKS.labels("dead_lettered").inc()
        log.error("orphan task message dead-lettered", extra={"attempt": delivery.attempt, "error": reason})
        return None

    async def _execute(self, message: TaskMessage, owner: str) -> Settled:
        with span("agent.task", task_id=message.task_id):
            # This site's copy is context enough (the home may be another site).
            history = await self.rt.sessions.peek(message.session_id)
            result = await self.rt.agent.respond(history, message.input)
            if message.work_seconds:
                await asyncio.sleep(message.work_seconds)
            turn_id = f"task-{message.task_id}"  # makes the append idempotent across redeliveries
            report = Message(
                role="assistant",
                content=f"Background task {message.task_id} finished: {result.reply}",
                at=time.time(),
                turn_id=turn_id,
                tool_calls=result.tool_calls,
                task_id=message.task_id,
            )
            try:
                await self._report(message.session_id, report)
            except NotFound:
                log.info("session expired before its task finished; result kept on the task only")
            except TooLarge:
                log.info("session full (its history limit); result kept on the task only")
            return await self.rt.tasks.succeed(message.task_id, owner, result.reply, result.tool_calls)

    async def _report(self, session_id: str, report: Message) -> None:
        """Append the task's report where the session lives: here, or at its home in the fleet
        (taken over first when that home is unreachable and this site is its successor)."""
        status = 0
        for _ in range(HOPS):
            home = None if self.rt.replicator is None else await locate(self.rt, "session", session_id)
            if home is None:
                await self.rt.sessions.append(session_id, [report], counts_as_turn=False)
                return
            assert self.rt.replicator is not None
            status = await self.rt.replicator.peers.append(home, session_id, [report.model_dump(mode="json")])
            if status == 200:
                return
            if status == 404:
                raise NotFound(f"session {session_id!r} does not exist or has expired")
            if status == 413:
                raise TooLarge(f"session {session_id!r} reached its history limit")
            if status != 0:
                break  # the home answered and refused: the delivery is retried later
        raise DependencyDown(f"the session's home did not take the report (status {status})")

    async def _heartbeat(
        self, delivery: Delivery, task_id: str | None = None, owner: str = "", *, at_once: bool = False
    ) -> None:
        """Extend the broker's lease every third of it, and the Redis claim when one is held;
        ``at_once``: first now (a hold begins an unknown time after the last extension)."""
        interval = max(1.0, self.lease / 3)

        async def beat() -> None:
            await self._quietly(delivery.extend(self.lease), "extend lease")
            if task_id is not None and not cancel_requested():
                await self._quietly(self.rt.tasks.renew(task_id, owner, self.lease), "renew claim")

        # Run on past the run's end, it would keep its message from coming back (agent_app.periodic).
        await every(lambda: interval, beat, at_once=at_once)

    async def _release(self, delivery: Delivery, task_id: str, owner: str, attempts: int) -> None:
        """A run cut short by shutdown: its claim given back as not counted, like its delivery,
        unless the task's free hand-backs are used up (the delivery is released: counted)."""
        counted = attempts - 1 if delivery.free_handback else attempts
        await self._quietly(self.rt.tasks.release(task_id, owner, counted), "release claim")
        await self._give_back(delivery)
        TASKS.labels("released").inc()
        log.info("task released for redelivery (shutdown)")

    async def _failed(
        self,
        delivery: Delivery,
        message: TaskMessage | None,
        error: str,
        *,
        claimed: bool,
        owner: str = "",
        recorded: bool = False,
    ) -> None:
        """Retry the delivery, or on its last attempt mark the task failed (under the claim held,
        or if unclaimed and nobody else runs it; ``recorded``: already done) and dead-letter it."""
        final = delivery.max_attempts is not None and delivery.attempt >= delivery.max_attempts
        if message is not None:
            if claimed:
                settled: Settled | None = None
                try:
                    settled = await self.rt.tasks.fail(message.task_id, owner, error, final=final)
                except Exception as exc:
                    log.warning("record failure failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                if settled == "lost":  # another claim holds the task: its delivery decides
                    TASKS.labels("lease_lost").inc()
                    log.warning("lease lost before the failure was stored; the delivery is left to its lease")
                    return
                if settled == "unheld" and final and not await self._held_by_fleet(delivery, message, owner):
                    return
            elif final and not recorded:
                await self._quietly(self.rt.tasks.fail_unclaimed(message.task_id, error), "record failure")
        extra = {"attempt": delivery.attempt, "max_attempts": delivery.max_attempts, "error": error}
        if final:
            if await self._quietly(delivery.dead_letter(error), "dead-letter"):
                TASKS.labels("dead_lettered").inc()
            log.error("task dead-lettered", extra=extra)
        else:
            await self._quietly(delivery.release(retry_delay(delivery.attempt)), "release for retry")
            TASKS.labels("retried").inc()
            log.warning("task failed; will be retried", extra=extra)


def probe_app(runtime: Runtime) -> ASGIApp:
    """/healthz, /readyz and /metrics for the worker, without a web framework."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        status, body, ctype = 404, b'{"code":"not_found"}', b"application/json"
        if path == LIVENESS_PATH:
            status, body = 200, b'{"status":"ok"}'
        elif path == READINESS_PATH:
            checks = await runtime.readiness()
            ready = not any(checks.values())
            status = 200 if ready else 503
            body = json.dumps(
                {
                    "status": "ready" if ready else "not_ready",
                    "checks": {k: v or "ok" for k, v in checks.items()},
                }
            ).encode()
        elif path == METRICS_PATH:
            status, body, ctype = 200, generate_latest(), CONTENT_TYPE_LATEST.encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})

    return app


class ProbeServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the worker owns SIGTERM


async def amain() -> Runtime:
    settings = bootstrap("worker")
    setup_tracing("agent-worker")
    runtime = Runtime(settings)
    worker = Worker(runtime)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.begin_drain)
    probes = ProbeServer(
        uvicorn.Config(
            probe_app(runtime),
            host="0.0.0.0",
            port=settings.port,
            lifespan="off",
            access_log=False,
            log_config=None,
        )
    )
    probe_task = asyncio.create_task(probes.serve())
    log.info("starting worker", extra={"queue": runtime.queue.kind, "concurrency": worker.concurrency})
    try:
        await worker.run()
    finally:
        probes.should_exit = True
        await runtime.close()
        await within(probe_task, runtime.shutdown.left(EXIT_MARGIN_SECONDS), "stopping the probe server")
    return runtime


def main() -> None:
    runtime = asyncio.run(amain())
    exit_now(0, runtime.shutdown)


if __name__ == "__main__":
    main()
