"""A worker lost during a task's last attempt, on each broker (NATS JetStream, SQS on moto's
server, Pub/Sub on the gRPC boundary): the broker's reserved delivery (agent_app.queues.base)
reaches another worker, which marks the task failed and dead-letters the message with the reason.
Without it, the task would read "running" for good while the broker parked the message unseen.
A worker stopped (SIGTERM) during the last attempt is not lost: its run is handed back unused.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from agent_app.config import Settings
from agent_app.queues import open_queue
from agent_app.queues.base import FREE_HANDBACKS
from agent_app.tasks import task_key
from skyfleet.testing.servers import AppProcess, RedisServer, app_env, wait_until
from tests.integration.agent_app.test_tasks import Stack, start_task, task_status
from tests.support.brokers import make_broker

LEASE_SECONDS = 3  # the task lease, the broker's included: a lost run's lease ends quickly
LOST = "worker lost during the last attempt"
WORK_SECONDS = 10  # a run that outlives a stop's grace, and ends within the test
STOP_GRACE_SECONDS = 4  # its close reserve (1 s) leaves the hand-back time on a busy machine


@pytest.fixture(scope="module", params=["nats", "sqs", "pubsub"])
def stack(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Stack]:
    broker = make_broker(request.param, request)
    env = app_env(redis_server.url, broker.env["AGENT_QUEUE_URL"], **broker.env)
    env["AGENT_TASK_LEASE_SECONDS"] = str(LEASE_SECONDS)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in broker.env.items():  # for this process's own adapter (use_up)
            mp.setenv(name, value)
        api = AppProcess("api", env).start()
        yield Stack(broker, api, env, redis_server)
        api.stop()


async def use_up(env: dict[str, str], attempts: int) -> None:
    """Receive the one queued message ``attempts`` times and hand it back each time, through the
    app's own adapter: deliveries a worker spent without running the task to its end."""
    queue = open_queue(Settings.model_validate(env))
    await queue.start(consume=True)
    try:
        seen = 0
        for _ in range(100):  # bounded: a handed-back message is delivered again at once
            for delivery in await queue.receive(1, 1.0):
                seen = delivery.attempt
                await delivery.release(0)
            if seen >= attempts:
                return
        raise AssertionError(f"the message reached delivery {seen} of the {attempts} wanted")
    finally:
        await queue.close()


async def hand_back(env: dict[str, str], times: int, attempt: int) -> None:
    """Receive the one queued message and requeue it ``times`` times through the app's own
    adapter, as a worker stopped before it ran the task does: each copy comes back at ``attempt``,
    one more free hand-back counted."""
    queue = open_queue(Settings.model_validate(env))
    await queue.start(consume=True)
    try:
        for handbacks in range(times):
            for _ in range(100):  # bounded: a copy is delivered at once
                if deliveries := await queue.receive(1, 1.0):
                    break
            else:
                raise AssertionError(f"no delivery after {handbacks} hand-backs")
            assert (deliveries[0].attempt, deliveries[0].handbacks) == (attempt, handbacks)
            await deliveries[0].send_copy()
            await deliveries[0].ack()
    finally:
        await queue.close()


def test_a_worker_lost_during_the_last_attempt_leaves_a_failed_task_and_a_dead_letter(stack: Stack) -> None:
    with stack.api.client() as client:
        _, task_id = start_task(client, "what is 4*4", work_seconds=120)
        asyncio.run(use_up(stack.env, stack.broker.max_attempts - 1))
        first = stack.worker()
        try:
            running = task_status(client, task_id, "running")
            assert running["attempts"] == 1
            first.proc.signal(signal.SIGKILL)  # lost during the run of the last attempt
            first.proc.wait()
        finally:
            first.stop()
        second = stack.worker()
        try:
            task = task_status(client, task_id, "failed", timeout=60)
            assert task["error"] == LOST
            letters = wait_until(
                lambda: [h for body, h in stack.broker.dead_lettered() if task_id.encode() in body],
                timeout=30,
                interval=0.5,
                what="the message in the dead-letter queue",
            )
            assert letters[0]["Skyfleet-Reason"] == LOST
            assert letters[0]["task_id"] == task_id  # the message's own attributes are kept
            assert "Nats-Msg-Id" not in letters[0]  # not the server's (NATS): see nats_queue
            assert int(letters[0]["Skyfleet-Attempts"]) == stack.broker.max_attempts + 1
            wait_until(lambda: stack.broker.backlog() == 0, what="the message to leave the work queue")
            assert second.metric("agent_tasks_total", outcome="dead_lettered") == 1
        finally:
            second.stop()


def test_a_failed_task_whose_dead_letter_was_never_sent_is_dead_lettered_at_the_reserved_delivery(
    stack: Stack,
) -> None:
    """The last run stored its failure and its worker was lost (or its send to the dead-letter
    queue failed) before the dead letter went out: the reserved delivery sends it, with the
    task's own error, rather than acknowledging the message away."""
    with stack.api.client() as client:
        _, task_id = start_task(client, "what is 5*5")
        stack.redis.client().hset(task_key(task_id), mapping={"status": "failed", "error": "model said no"})
        asyncio.run(use_up(stack.env, stack.broker.max_attempts))
        worker = stack.worker()
        try:
            letters = wait_until(
                lambda: [h for body, h in stack.broker.dead_lettered() if task_id.encode() in body],
                timeout=30,
                interval=0.5,
                what="the message in the dead-letter queue",
            )
            assert letters[0]["Skyfleet-Reason"] == "model said no"
            assert int(letters[0]["Skyfleet-Attempts"]) == stack.broker.max_attempts + 1
            wait_until(lambda: stack.broker.backlog() == 0, what="the message to leave the work queue")
            assert worker.metric("agent_tasks_total", outcome="dead_lettered") == 1
            assert worker.metric("agent_tasks_total", outcome="duplicate") == 0
            assert client.get(f"/v1/tasks/{task_id}").json()["error"] == "model said no"
        finally:
            worker.stop()


def test_a_worker_stopped_during_the_last_run_hands_it_back_without_using_it_up(stack: Stack) -> None:
    """A deploy or a scale-in stops a worker during a task's last run: the run is handed back as
    not counted (a copy requeued with the attempts used before it), so the next worker runs that
    attempt again rather than taking the reserved delivery for a lost worker's and failing the
    task unrun. Twice over, then a run to its end."""
    with stack.api.client() as client:
        _, task_id = start_task(client, "what is 6*6", work_seconds=WORK_SECONDS)
        asyncio.run(use_up(stack.env, stack.broker.max_attempts - 1))
        for _ in range(2):
            worker = stack.worker(AGENT_SHUTDOWN_GRACE_SECONDS=str(STOP_GRACE_SECONDS))
            try:
                assert task_status(client, task_id, "running")["attempts"] == 1
                worker.proc.signal(signal.SIGTERM)  # stopped during the run, well before its end
                assert worker.proc.wait() == 0
            finally:
                worker.stop()
            assert task_status(client, task_id, "queued")["attempts"] == 0  # not counted
        last = stack.worker()
        try:
            task = task_status(client, task_id, "succeeded", timeout=WORK_SECONDS + 30)
            assert task["attempts"] == 1
            assert last.metric("agent_tasks_total", outcome="succeeded") == 1
            wait_until(lambda: stack.broker.backlog() == 0, what="the message to leave the work queue")
            assert [h for body, h in stack.broker.dead_lettered() if task_id.encode() in body] == []
        finally:
            last.stop()


def test_hand_backs_are_free_only_so_often(stack: Stack) -> None:
    """A task whose workers keep being stopped (one that brings its worker down, say) is handed
    back free only FREE_HANDBACKS times: each copy restarts the broker's own delivery limit, so
    past that a stop uses an attempt like any release, and the last one ends in the reserved
    delivery and a dead letter."""
    with stack.api.client() as client:
        _, task_id = start_task(client, "what is 7*7", work_seconds=WORK_SECONDS)
        asyncio.run(use_up(stack.env, stack.broker.max_attempts - 1))
        asyncio.run(hand_back(stack.env, FREE_HANDBACKS, stack.broker.max_attempts))
        worker = stack.worker(AGENT_SHUTDOWN_GRACE_SECONDS=str(STOP_GRACE_SECONDS))
        try:
            assert task_status(client, task_id, "running")["attempts"] == 1
            worker.proc.signal(signal.SIGTERM)
            assert worker.proc.wait() == 0
        finally:
            worker.stop()
        # Released, not requeued: the run is counted, as the broker counts its delivery.
        assert task_status(client, task_id, "queued")["attempts"] == 1
        after = stack.worker()
        try:
            assert task_status(client, task_id, "failed", timeout=60)["error"] == LOST
            letters = wait_until(
                lambda: [h for body, h in stack.broker.dead_lettered() if task_id.encode() in body],
                timeout=30,
                interval=0.5,
                what="the message in the dead-letter queue",
            )
            assert int(letters[0]["Skyfleet-Attempts"]) == stack.broker.max_attempts + 1
            assert letters[0]["Skyfleet-Handbacks"] == str(FREE_HANDBACKS)
        finally:
            after.stop()
