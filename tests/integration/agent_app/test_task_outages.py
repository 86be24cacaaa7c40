"""A task's message in the hard cases, on each real broker (NATS JetStream, SQS on moto's
server, Pub/Sub on the gRPC boundary): a cache outage longer than the broker's attempts, a run
whose lease another delivery took over, and a duplicate dead-lettered while its task runs.

Each test has its own Redis, queue, api and worker, as one of them hangs the cache.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from agent_app.keys import task_key
from skyfleet.testing.servers import AppProcess, RedisServer, app_env, wait_until
from tests.support.brokers import Broker, make_broker


@dataclass
class Site:
    broker: Broker
    redis: RedisServer
    api: AppProcess
    worker: AppProcess

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def record(self, task_id: str) -> dict[str, str]:
        return self.store().hgetall(task_key(task_id))  # type: ignore[return-value]

    def session(self) -> str:
        with self.api.client() as client:
            return client.post("/v1/sessions").json()["id"]

    def queued_task(self, session_id: str, text: str) -> tuple[str, bytes]:
        """A task record as the api stores it, and its message (published by the test)."""
        task_id = uuid.uuid4().hex
        now = time.time()
        fields = {"id": task_id, "session_id": session_id, "status": "queued", "input": text}
        self.store().hset(
            task_key(task_id), mapping={**fields, "attempts": 0, "created_at": now, "updated_at": now}
        )
        body = {"task_id": task_id, "session_id": session_id, "input": text, "enqueued_at": now}
        return task_id, json.dumps(body).encode()


@pytest.fixture(params=["nats", "sqs", "pubsub"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    broker = make_broker(request.param, request)
    store = RedisServer().start()
    # The hung cache fails a claim within about a second (its read timeout and failover wait).
    env = app_env(
        store.url,
        broker.env["AGENT_QUEUE_URL"],
        **broker.env,
        AGENT_TASK_RECORD_WAIT_SECONDS="1",
        AGENT_REDIS_FAILOVER_WAIT_SECONDS="0.3",
    )
    api = AppProcess("api", env).start()
    worker = AppProcess("worker", env).start()
    try:
        yield Site(broker, store, api, worker)
    finally:
        worker.stop()
        api.stop()
        store.stop()


def test_a_cache_outage_longer_than_the_brokers_attempts_dead_letters_no_task(site: Site) -> None:
    """While the cache does not answer the worker holds the delivery instead of handing it back:
    each hand-back would use up one of the broker's attempts (3 here, 5 on Pub/Sub, each one
    record wait plus a backoff), and the task would be dead-lettered with its record queued."""
    task_id, message = site.queued_task(site.session(), "what is 4*4")
    assert site.redis.proc is not None
    site.redis.proc.signal(signal.SIGSTOP)
    try:
        site.broker.publish_raw(message)
        wait_until(
            lambda: "task cannot be claimed yet" in site.worker.output(),
            timeout=20,
            what="the worker to hold the delivery",
        )
        # Long past the broker's attempts, had each try been handed back (about 2 s each).
        time.sleep(25)  # the outage itself, not a wait for a condition
        assert not site.broker.dead_letters()
    finally:
        site.redis.proc.signal(signal.SIGCONT)
    wait_until(
        lambda: site.record(task_id).get("status") == "succeeded",
        timeout=30,
        what="the task to run once the cache answers",
    )
    record = site.record(task_id)
    assert record["result"] == "4*4 = 16"
    assert record["attempts"] == "1"
    assert not site.broker.dead_letters()
    wait_until(lambda: site.broker.backlog() == 0, what="the task's message to be acknowledged")


def test_a_run_whose_lease_was_taken_over_leaves_the_message_to_the_run_that_holds_it(site: Site) -> None:
    """A worker whose lease another claim took (its heartbeat could not reach the cache in time,
    say) must not acknowledge: the message belongs to that claim's delivery now, and if that
    run dies too, only the message brings the task back. Here the other claim is a worker that
    died at once: its lease runs out, and the task is run again from the message."""
    session_id = site.session()
    with site.api.client() as client:
        accepted = client.post(
            f"/v1/sessions/{session_id}/tasks", json={"input": "what is 3*5", "work_seconds": 4}
        )
        assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    wait_until(lambda: site.record(task_id).get("status") == "running", what="the task to run")
    lease_until = int((time.time() + 2) * 1000)
    site.store().hset(task_key(task_id), mapping={"lease_owner": "dead-worker:0", "lease_until": lease_until})
    record = wait_until(
        lambda: (r := site.record(task_id)).get("status") == "succeeded" and r,
        timeout=40,
        what="the task to run again from its message",
    )
    assert record["result"] == "3*5 = 15"
    assert record["attempts"] == "2"
    assert site.worker.metric("agent_tasks_total", outcome="lease_lost") == 1
    assert not site.broker.dead_letters()
    wait_until(lambda: site.broker.backlog() == 0, what="the task's message to be acknowledged")


def test_a_duplicate_dead_lettered_while_its_task_runs_leaves_the_task_running(site: Site) -> None:
    """A second message for a task another worker runs (a publish sent again, say) is handed back
    while that lease lives, until the broker's attempts run out and it is dead-lettered. The
    task itself is not failed: its run holds a live lease and will settle it."""
    task_id, message = site.queued_task(site.session(), "what is 9*9")
    key = task_key(task_id)
    store = site.store()
    stop = threading.Event()

    # Another worker's run: claimed, its lease renewed as its heartbeat would.
    store.hset(key, mapping={"status": "running", "lease_owner": "other:1", "attempts": 1})

    def heartbeat() -> None:
        while not stop.is_set():
            store.hset(key, "lease_until", int((time.time() + 3) * 1000))
            stop.wait(0.5)

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        site.broker.publish_raw(message)
        wait_until(
            lambda: [b for b in site.broker.dead_letters() if task_id.encode() in b],
            timeout=60,
            interval=0.5,
            what="the duplicate to be dead-lettered",
        )
        record = site.record(task_id)
        assert (record["status"], record["lease_owner"]) == ("running", "other:1")
        assert "error" not in record
    finally:
        stop.set()
        beat.join()
