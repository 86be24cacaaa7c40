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

from agent_app.auth import key_id
from agent_app.keys import task_key
from agent_app.tasks import _FAIL_UNCLAIMED, _SETTLE  # pyright: ignore[reportPrivateUsage]
from skyfleet.testing.servers import API_KEY, AppProcess, RedisServer, app_env, wait_until
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
        fields |= {"client": key_id(API_KEY)}
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
        AGENT_SHUTDOWN_GRACE_SECONDS="30",
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
            lambda: site.worker.metric("agent_tasks_total", outcome="waited") == 1,
            timeout=20,
            what="the worker to hold the delivery",
        )
        # The outage itself, not a wait for a condition: past the broker's attempts, had each try
        # been handed back (each one a record wait and a backoff: about 2.5-4 s).
        time.sleep(5 * site.broker.max_attempts)
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


def test_a_cache_outage_during_a_run_is_waited_out_and_the_run_made_again(site: Site) -> None:
    """The cache hangs while the task runs: its report and result cannot be stored. That is not
    the task's failure: the worker holds the delivery through the outage (attempts unspent) and
    runs the task again under the claim it still holds."""
    session_id = site.session()
    with site.api.client() as client:
        accepted = client.post(
            f"/v1/sessions/{session_id}/tasks", json={"input": "what is 7*7", "work_seconds": 3}
        )
        assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    wait_until(lambda: site.record(task_id).get("status") == "running", what="the task to run")
    assert site.redis.proc is not None
    site.redis.proc.signal(signal.SIGSTOP)
    try:
        time.sleep(
            5 * site.broker.max_attempts
        )  # the outage: past the broker's attempts, had each been spent
        assert not site.broker.dead_letters()
    finally:
        site.redis.proc.signal(signal.SIGCONT)
    record = wait_until(
        lambda: (r := site.record(task_id)).get("status") == "succeeded" and r,
        timeout=30,
        what="the task to run again once the cache answers",
    )
    assert record["result"] == "7*7 = 49"
    assert record["attempts"] == "1"  # the same claim, found again
    assert site.worker.metric("agent_tasks_total", outcome="interrupted") == 1
    assert site.worker.metric("agent_tasks_total", outcome="retried") == 0
    with site.api.client() as client:
        messages = client.get(f"/v1/sessions/{session_id}").json()["messages"]
    assert [m["task_id"] for m in messages if m.get("task_id")] == [task_id]  # one report
    assert not site.broker.dead_letters()
    wait_until(lambda: site.broker.backlog() == 0, what="the task's message to be acknowledged")


def test_a_delivery_held_through_an_outage_is_handed_back_at_once_on_sigterm(site: Site) -> None:
    """A held delivery runs nothing: on SIGTERM it is released at once, not when the drain's
    grace runs out, and the task runs at the next worker once the cache is back."""
    task_id, message = site.queued_task(site.session(), "what is 8*8")
    assert site.redis.proc is not None
    site.redis.proc.signal(signal.SIGSTOP)
    try:
        site.broker.publish_raw(message)
        wait_until(
            lambda: site.worker.metric("agent_tasks_total", outcome="waited") == 1,
            timeout=20,
            what="the worker to hold the delivery",
        )
        site.worker.proc.signal(signal.SIGTERM)
        # The grace is 30 s here: a worker that kept holding until the drain gave up would
        # still be running long after this bound.
        wait_until(lambda: not site.worker.proc.alive(), timeout=10, what="the worker to exit")
    finally:
        site.redis.proc.signal(signal.SIGCONT)
    # The cache, resumed, runs the claims the first worker sent while it hung: a lease of a
    # worker that is gone, which a next delivery would find busy. Let it end first.
    wait_until(
        lambda: int(site.record(task_id).get("lease_until", "0")) < time.time() * 1000,
        what="the gone worker's lease to end",
    )
    second = AppProcess("worker", site.worker.base_env).start()
    try:
        wait_until(
            lambda: site.record(task_id).get("status") == "succeeded",
            timeout=40,
            what="the next worker to run the released task",
        )
    finally:
        second.stop()


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
    try:
        record = wait_until(
            lambda: (r := site.record(task_id)).get("status") == "succeeded" and r,
            timeout=40,
            what="the task to run again from its message",
        )
    except AssertionError as exc:  # what the worker did is the only account of why
        raise AssertionError(
            f"{exc}\nrecord: {site.record(task_id)}\nworker:\n{site.worker.output()[-6000:]}"
        ) from None
    assert record["result"] == "3*5 = 15"
    assert record["attempts"] == "2"
    assert site.worker.metric("agent_tasks_total", outcome="lease_lost") == 1
    assert not site.broker.dead_letters()
    wait_until(lambda: site.broker.backlog() == 0, what="the task's message to be acknowledged")


def test_a_duplicate_of_a_running_task_is_held_at_its_reserved_delivery_until_the_run_settles(
    site: Site,
) -> None:
    """A second message for a task another worker runs (a publish sent again, say) is handed back
    while that lease lives, until its attempts are used up. Its reserved delivery (the broker's
    one more, agent_app.queues.base) is then held, not dead-lettered and without failing the
    task: a live lease means that run may yet settle it. Once it has, the duplicate is
    acknowledged."""
    task_id, message = site.queued_task(site.session(), "what is 9*9")
    key = task_key(task_id)
    store = site.store()
    stop = threading.Event()
    duplicates = site.worker.metric("agent_tasks_total", outcome="duplicate")
    held = "holding the reserved delivery"
    held_before = site.worker.output().count(held)

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
            lambda: site.worker.output().count(held) > held_before,
            timeout=60,
            interval=0.5,
            what="the duplicate's reserved delivery to be held",
        )
        record = site.record(task_id)
        assert (record["status"], record["lease_owner"]) == ("running", "other:1")
        assert "error" not in record
        assert not [b for b in site.broker.dead_letters() if task_id.encode() in b]
    finally:
        stop.set()
        beat.join()
    # The other run settles the task.
    store.hset(key, mapping={"status": "succeeded", "result": "9*9 = 81"})
    store.hdel(key, "lease_owner", "lease_until")
    wait_until(lambda: site.broker.backlog() == 0, what="the held duplicate to be acknowledged")
    assert site.worker.metric("agent_tasks_total", outcome="duplicate") == duplicates + 1
    assert not [b for b in site.broker.dead_letters() if task_id.encode() in b]
    assert site.record(task_id)["result"] == "9*9 = 81"


def test_a_settle_sent_again_after_its_reply_was_lost_finds_the_result_stored(
    redis_server: RedisServer,
) -> None:
    """The cache client sends a write again when its reply is lost; the settle's first send
    already dropped the lease, so the second must find its own write, not report the lease lost
    (the worker would then leave a stored result unacknowledged and spend an attempt)."""
    store = redis_server.client()
    key = task_key(uuid.uuid4().hex)
    store.hset(
        key, mapping={"status": "running", "lease_owner": "worker-1:a", "lease_until": 1, "version": 1}
    )
    settle = [key, "worker-1:a", "write-1", "status", "succeeded", "result", "42"]
    assert store.eval(_SETTLE, 1, *settle) == 1
    assert store.eval(_SETTLE, 1, *settle) == 1  # the same write, sent again
    assert store.eval(_SETTLE, 1, key, "worker-1:a", "write-2", "status", "failed") == 0
    assert store.eval(_SETTLE, 1, key, "worker-2:b", "write-3", "status", "failed") == 0
    record = store.hgetall(key)
    assert (record["status"], record["result"], record["version"]) == ("succeeded", "42", "2")


LIVE = 2**53  # a lease that has not run out (ms)


@pytest.mark.parametrize(
    ("fields", "site", "marked"),
    [
        pytest.param({"lease_until": 1}, "", True, id="no-fleet-lease-run-out"),
        pytest.param({"lease_until": LIVE}, "", False, id="no-fleet-live-lease"),
        pytest.param({"home": "site-a", "lease_until": 1}, "site-a", True, id="home-here"),
        pytest.param({"home": "site-b", "lease_until": 1}, "site-a", False, id="home-at-another-site"),
        pytest.param(
            {"home": "site-a", "taking": "site-b", "lease_until": 1}, "site-a", False, id="takeover-under-way"
        ),
        pytest.param({"home": "site-a", "status": "succeeded"}, "site-a", False, id="finished"),
    ],
)
def test_a_message_dead_lettered_unclaimed_fails_its_task_only_when_nothing_else_runs_it(
    redis_server: RedisServer, fields: dict[str, str | int], site: str, marked: bool
) -> None:
    """A worker that dead-letters a message it holds no claim for marks the task failed only
    when no one else runs it: not under another's live lease, not when another site of the
    fleet is its home (that site's delivery decides), and not while this site's takeover of it
    is under way (no majority holds it yet; the old home may still run it)."""
    store = redis_server.client()
    key = task_key(uuid.uuid4().hex)
    store.hset(key, mapping={"status": "running", "lease_owner": "other:1", "version": 3, **fields})
    before = store.hgetall(key)
    args = ["worker lost during the last attempt", time.time(), site, "write-1"]
    outcome = store.eval(_FAIL_UNCLAIMED, 1, key, *args)
    if fields.get("lease_until") == LIVE:  # how long that lease has left, for the caller to wait
        assert outcome < -(10**12)
    elif fields.get("status") == "succeeded":  # finished: the caller settles it as such
        assert outcome == 2
    else:
        assert outcome == int(marked)
    after = store.hgetall(key)
    if marked:
        assert (after["status"], after["version"], after["wid"]) == ("failed", "4", "write-1")
        assert after["error"] == "worker lost during the last attempt"
        assert "lease_owner" not in after
    else:
        assert after == before
