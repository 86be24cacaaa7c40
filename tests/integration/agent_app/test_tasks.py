"""Async tasks end to end through each queue adapter, against real brokers:
NATS JetStream (nats-server), SQS (moto_server) and Pub/Sub (the gRPC boundary).

Every scenario runs the real api and worker processes (one of each per broker; the
kill scenario starts its own workers). Counters are read from the worker's /metrics as
differences, so the scenarios do not depend on their order.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from agent_app.auth import key_id
from agent_app.tasks import task_key
from skyfleet.testing.servers import API_KEY, AppProcess, RedisServer, app_env, wait_until
from tests.support.brokers import Broker, make_broker

# How long the module's worker holds a delivery whose task record is not visible.
RECORD_WAIT_SECONDS = 4


@dataclass
class Stack:
    broker: Broker
    api: AppProcess
    env: dict[str, str]
    redis: RedisServer

    def worker(self, **extra: str) -> AppProcess:
        return AppProcess("worker", {**self.env, **extra}).start()


@pytest.fixture(scope="module", params=["nats", "sqs", "pubsub"])
def stack(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Stack]:
    broker = make_broker(request.param, request)
    env = app_env(redis_server.url, broker.env["AGENT_QUEUE_URL"], **broker.env)
    api = AppProcess("api", env).start()
    yield Stack(broker, api, env, redis_server)
    api.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[AppProcess]:
    proc = stack.worker(AGENT_TASK_RECORD_WAIT_SECONDS=str(RECORD_WAIT_SECONDS))
    yield proc
    proc.stop()


def start_task(client: httpx.Client, text: str, work_seconds: float = 0) -> tuple[str, str]:
    session_id = client.post("/v1/sessions").json()["id"]
    accepted = client.post(
        f"/v1/sessions/{session_id}/tasks", json={"input": text, "work_seconds": work_seconds}
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "queued"
    return session_id, accepted.json()["task_id"]


def task_status(client: httpx.Client, task_id: str, status: str, timeout: float = 40) -> dict:
    return wait_until(
        lambda: (body := client.get(f"/v1/tasks/{task_id}").json())["status"] == status and body,
        timeout=timeout,
        interval=0.1,
        what=f"task {task_id} to be {status}",
    )


def test_task_end_to_end(stack: Stack, worker: AppProcess) -> None:
    with stack.api.client() as client:
        session_id, task_id = start_task(client, "what is 6*7")
        task = task_status(client, task_id, "succeeded")
        assert task["result"] == "6*7 = 42"
        assert task["attempts"] == 1
        assert task["session_id"] == session_id
        report = client.get(f"/v1/sessions/{session_id}").json()["messages"][-1]
        assert report["task_id"] == task_id
        assert report["content"].endswith("6*7 = 42")
    wait_until(lambda: stack.broker.backlog() == 0, what="the queue to be empty (acked)")


def test_a_task_started_again_with_its_idempotency_key_is_queued_and_run_once(
    stack: Stack, worker: AppProcess
) -> None:
    with stack.api.client() as client:
        session_id = client.post("/v1/sessions").json()["id"]

        def start(text: str) -> httpx.Response:
            return client.post(
                f"/v1/sessions/{session_id}/tasks", json={"input": text}, headers={"Idempotency-Key": "t-1"}
            )

        accepted = [start("what is 6*7") for _ in range(3)]
        assert [r.status_code for r in accepted] == [202] * 3, [r.text for r in accepted]
        assert len({r.json()["task_id"] for r in accepted}) == 1
        task = task_status(client, accepted[0].json()["task_id"], "succeeded")
        assert task["attempts"] == 1
        again = start("what is 6*7")
        assert again.status_code == 202 and again.json()["status"] == "succeeded"
        assert start("what is 7*8").status_code == 422
        messages = client.get(f"/v1/sessions/{session_id}").json()["messages"]
        assert [m["task_id"] for m in messages if m.get("task_id")] == [task["id"]]  # one report
    wait_until(lambda: stack.broker.backlog() == 0, what="the queue to be empty (acked)")


def test_tool_call_becomes_task(stack: Stack, worker: AppProcess) -> None:
    with stack.api.client() as client:
        session_id = client.post("/v1/sessions").json()["id"]
        turn = client.post(
            f"/v1/sessions/{session_id}/messages", json={"content": "look into sqs in the background"}
        )
        assert turn.status_code == 200
        task_id = turn.json()["task_id"]
        assert task_id and task_id in turn.json()["reply"]["content"]
        task = task_status(client, task_id, "succeeded")
        assert task["input"] == "look into sqs"
        messages = client.get(f"/v1/sessions/{session_id}").json()["messages"]
        # The task is queued before the turn is stored, so a fast worker may report first.
        reports = [
            m["content"] for m in messages if m["content"].startswith(f"Background task {task_id} finished")
        ]
        assert len(reports) == 1


def test_poison_message_is_dead_lettered_after_max_attempts(stack: Stack, worker: AppProcess) -> None:
    retried = worker.metric("agent_tasks_total", outcome="retried")
    dead = worker.metric("agent_tasks_total", outcome="dead_lettered")
    poison = f"poison-{uuid.uuid4().hex}".encode()
    stack.broker.publish_raw(poison)
    letters = wait_until(
        lambda: [b for b in stack.broker.dead_letters() if b == poison],
        timeout=60,
        interval=0.5,
        what="the DLQ",
    )
    assert letters == [poison]
    attempts = stack.broker.max_attempts
    assert worker.metric("agent_tasks_total", outcome="retried") - retried == attempts - 1
    assert worker.metric("agent_tasks_total", outcome="dead_lettered") - dead == 1
    wait_until(lambda: stack.broker.backlog() == 0, what="the poison message to leave the work queue")


def test_duplicate_delivery_runs_the_task_once(stack: Stack, worker: AppProcess) -> None:
    duplicates = worker.metric("agent_tasks_total", outcome="duplicate")
    succeeded = worker.metric("agent_tasks_total", outcome="succeeded")
    with stack.api.client() as client:
        session_id, task_id = start_task(client, "what is 2+2")
        task_status(client, task_id, "succeeded")
        duplicate = {
            "task_id": task_id,
            "session_id": session_id,
            "input": "what is 2+2",
            "work_seconds": 0,
            "enqueued_at": time.time(),
        }
        stack.broker.publish_raw(json.dumps(duplicate).encode())
        wait_until(
            lambda: worker.metric("agent_tasks_total", outcome="duplicate") - duplicates == 1,
            what="the duplicate",
        )
        task = client.get(f"/v1/tasks/{task_id}").json()
        assert task["attempts"] == 1
        reports = [m for m in client.get(f"/v1/sessions/{session_id}").json()["messages"] if m.get("task_id")]
        assert len(reports) == 1
    assert worker.metric("agent_tasks_total", outcome="succeeded") - succeeded == 1
    wait_until(lambda: stack.broker.backlog() == 0, what="the duplicate to be acked")


def task_message(task_id: str, session_id: str, text: str) -> bytes:
    body = {"task_id": task_id, "session_id": session_id, "input": text, "enqueued_at": time.time()}
    return json.dumps(body).encode()


def test_a_record_that_shows_up_late_is_waited_for(stack: Stack, worker: AppProcess) -> None:
    """A delivery can outrun the cache view it is checked against (a node demoted, a partition
    healing): the worker holds it and looks again, rather than burning its attempts."""
    waited = worker.metric("agent_tasks_total", outcome="waited")
    retried = worker.metric("agent_tasks_total", outcome="retried")
    with stack.api.client() as client:
        session_id = client.post("/v1/sessions").json()["id"]
        task_id = uuid.uuid4().hex
        stack.broker.publish_raw(task_message(task_id, session_id, "what is 5*5"))
        wait_until(
            lambda: worker.metric("agent_tasks_total", outcome="waited") - waited == 1,
            what="the worker to hold the delivery",
        )
        now = time.time()
        stack.redis.client().hset(
            task_key(task_id),
            mapping={
                "id": task_id,
                "session_id": session_id,
                "status": "queued",
                "input": "what is 5*5",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "client": key_id(API_KEY),
            },
        )
        task = task_status(client, task_id, "succeeded")
        assert task["result"] == "5*5 = 25"
        assert task["attempts"] == 1
    assert worker.metric("agent_tasks_total", outcome="retried") == retried
    assert not [b for b in stack.broker.dead_letters() if task_id.encode() in b]
    wait_until(lambda: stack.broker.backlog() == 0, what="the task to be acked")


def test_an_orphan_message_is_dead_lettered_after_the_record_wait(stack: Stack, worker: AppProcess) -> None:
    """No record ever: after the wait the message goes to the DLQ, its attempts unspent."""
    retried = worker.metric("agent_tasks_total", outcome="retried")
    task_id = uuid.uuid4().hex
    started = time.monotonic()
    stack.broker.publish_raw(task_message(task_id, uuid.uuid4().hex, "nobody stored me"))
    letters = wait_until(
        lambda: [b for b in stack.broker.dead_letters() if task_id.encode() in b],
        timeout=60,
        interval=0.5,
        what="the orphan in the DLQ",
    )
    assert len(letters) == 1
    # held for the wait first (give or take one look-up: the worker polls every 0.5 s)
    assert time.monotonic() - started >= RECORD_WAIT_SECONDS - 1
    assert worker.metric("agent_tasks_total", outcome="retried") == retried
    # Sent there at once, with the reason, by every adapter: no further delivery was used up.
    ((_, headers),) = [(b, h) for b, h in stack.broker.dead_lettered() if task_id.encode() in b]
    assert headers["Skyfleet-Reason"].startswith("no task record for this message after")
    assert headers["Skyfleet-Attempts"] == "1"
    wait_until(lambda: stack.broker.backlog() == 0, what="the orphan to leave the work queue")


def test_worker_killed_mid_task_is_redelivered_and_completed(stack: Stack, worker: AppProcess) -> None:
    """Runs last for each broker: it kills the module's worker."""
    with stack.api.client() as client:
        _, task_id = start_task(client, "what is 3*3", work_seconds=4)
        task_status(client, task_id, "running")
        worker.proc.signal(signal.SIGKILL)
        worker.proc.wait()
        second = stack.worker()
        try:
            task = task_status(client, task_id, "succeeded", timeout=60)
            assert task["result"] == "3*3 = 9"
            assert task["attempts"] == 2
        finally:
            second.stop()
