"""Process-level behaviour: Redis outage and recovery, and SIGTERM drain of api and worker."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator

import httpx
import pytest

from agent_app.deps import created_id
from skyfleet.testing.servers import API_KEY, AppProcess, NatsServer, RedisServer, app_env, wait_until
from tests.integration.agent_app.chat_server import ChatServer
from tests.support.brokers import NatsBroker

BOUND = 10.0  # an answer slower than this is a hang, and fails the test


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def test_redis_outage_gives_fast_503_and_recovers_without_restart(
    own_redis: RedisServer, nats_env: dict[str, str]
) -> None:
    env = {**nats_env, "AGENT_REDIS_URL": own_redis.url, "AGENT_REDIS_FAILOVER_WAIT_SECONDS": "0.3"}
    api = AppProcess("api", env).start()
    revived = RedisServer(port=own_redis.port)
    try:
        with api.client(timeout=BOUND) as client:
            session_id = client.post("/v1/sessions").json()["id"]
            assert (
                client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"}).status_code == 200
            )

            own_redis.stop()
            ready = httpx.get(api.url + "/readyz", timeout=BOUND)
            assert ready.status_code == 503
            state = ready.json()["checks"]["redis"]
            # the kind of failure, not its detail (the probe answers anyone)
            assert state != "ok" and ":" not in state and str(own_redis.port) not in state, state
            for response in (
                client.post("/v1/sessions"),
                client.get(f"/v1/sessions/{session_id}"),
                client.post(f"/v1/sessions/{session_id}/messages", json={"content": "still there?"}),
            ):
                assert response.status_code == 503
                assert response.json()["code"] == "dependency_unavailable"
                assert response.headers["retry-after"] == "1"

            revived.start()  # same address, empty data set
            wait_until(
                lambda: httpx.get(api.url + "/readyz").status_code == 200, what="readiness after recovery"
            )
            fresh = client.post("/v1/sessions").json()["id"]
            turn = client.post(f"/v1/sessions/{fresh}/messages", json={"content": "what is 1+1"})
            assert turn.status_code == 200
            assert turn.json()["reply"]["content"] == "1+1 = 2"
        assert api.proc.alive()  # recovered in place
    finally:
        api.stop()
        revived.stop()


def test_hung_redis_gives_503_not_a_hang_and_recovers(
    own_redis: RedisServer, nats_env: dict[str, str]
) -> None:
    """A Redis that never answers (stopped, not dead): no socket error ever comes, so only
    the client's read timeout (``agent_app.cache.connect``) stands between a turn and a hang."""
    env = {**nats_env, "AGENT_REDIS_URL": own_redis.url, "AGENT_REDIS_FAILOVER_WAIT_SECONDS": "0.3"}
    api = AppProcess("api", env).start()
    assert own_redis.proc is not None
    try:
        # The app's read timeout is 1.5 s (connect 1 s + the 0.5 s WAIT timeout); the test's
        # own 5 s read timeout fails it on a hang.
        with api.client(timeout=5.0) as client:
            session_id = client.post("/v1/sessions").json()["id"]
            own_redis.proc.signal(signal.SIGSTOP)
            try:
                turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "anyone?"})
                assert turn.status_code == 503, turn.text
                assert turn.json()["code"] == "dependency_unavailable"
                assert httpx.get(api.url + "/readyz", timeout=5.0).status_code == 503
            finally:
                own_redis.proc.signal(signal.SIGCONT)
            wait_until(
                lambda: httpx.get(api.url + "/readyz").status_code == 200, what="readiness after SIGCONT"
            )
            turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "what is 2+3"})
            assert turn.status_code == 200, turn.text
            assert turn.json()["reply"]["content"] == "2+3 = 5"
            # The stopped turn timed out at its first command (the rate limit), before any write.
            assert turn.json()["turn"] == 1
        assert api.proc.alive()
    finally:
        api.stop()


def test_api_sigterm_drains_in_flight_requests(
    nats_env: dict[str, str], chat_server: ChatServer, redis_server: RedisServer
) -> None:
    chat_server.delay = 3.0
    env = {**nats_env, "AGENT_MODEL_BACKEND": "openai", "AGENT_MODEL_BASE_URL": chat_server.base_url}
    api = AppProcess("api", env).start()
    with api.client(timeout=BOUND) as client:
        session_id = client.post("/v1/sessions").json()["id"]
    results: list[httpx.Response] = []

    def slow_turn() -> None:
        with api.client(timeout=BOUND) as c:
            results.append(c.post(f"/v1/sessions/{session_id}/messages", json={"content": "take your time"}))

    thread = threading.Thread(target=slow_turn)
    thread.start()
    wait_until(lambda: len(chat_server.requests) == 1, what="the turn to reach the model")
    api.proc.signal(signal.SIGTERM)

    ready = wait_until(
        lambda: (r := httpx.get(api.url + "/readyz", timeout=BOUND)).status_code == 503 and r,
        what="readyz 503",
    )
    assert ready.json()["checks"]["draining"] == "yes"
    with api.client(timeout=BOUND) as client:
        refused = client.post("/v1/sessions")
    assert refused.status_code == 503
    assert refused.json()["code"] == "draining"

    thread.join(BOUND)
    assert results and results[0].status_code == 200
    assert results[0].json()["reply"]["content"] == "remote echo: take your time"
    assert api.proc.wait(BOUND) == 0
    stored = redis_server.client().hget(f"skyfleet:session:{{{session_id}}}", "messages")
    assert [m["content"] for m in json.loads(stored)] == ["take your time", "remote echo: take your time"]


def test_worker_sigterm_finishes_short_tasks_and_releases_long_ones(nats_env: dict[str, str]) -> None:
    env = {**nats_env, "AGENT_SHUTDOWN_GRACE_SECONDS": "2"}
    api = AppProcess("api", env).start()
    worker = AppProcess("worker", env).start()
    try:
        with api.client(timeout=BOUND) as client:
            session_id = client.post("/v1/sessions").json()["id"]

            def enqueue(seconds: float) -> str:
                body = {"input": "what is 5*5", "work_seconds": seconds}
                return client.post(f"/v1/sessions/{session_id}/tasks", json=body).json()["task_id"]

            def status(task_id: str) -> dict:
                return client.get(f"/v1/tasks/{task_id}").json()

            short, long = enqueue(1), enqueue(8)
            wait_until(
                lambda: status(short)["status"] == status(long)["status"] == "running", what="both running"
            )
            worker.proc.signal(signal.SIGTERM)
            wait_until(lambda: httpx.get(worker.url + "/readyz").status_code == 503, what="worker readyz 503")
            late = enqueue(0)  # published while draining: must not be taken

            assert worker.proc.wait(BOUND + 5) == 0
            assert status(short)["status"] == "succeeded"
            assert status(long)["status"] == "queued"  # released, not lost
            assert status(late)["status"] == "queued"
            assert status(late)["attempts"] == 0

            second = AppProcess("worker", env).start()
            try:
                assert wait_until(lambda: status(late)["status"] == "succeeded", what="late task")
                done = wait_until(
                    lambda: (s := status(long))["status"] == "succeeded" and s,
                    timeout=60,
                    what="released task",
                )
                assert done["attempts"] == 1  # the run the shutdown cut short does not count
            finally:
                second.stop()
    finally:
        worker.stop()
        api.stop()


def test_a_keyed_task_whose_queueing_failed_is_kept_and_queued_by_its_retry(
    redis_server: RedisServer,
) -> None:
    """The queue hangs when a task is created with an Idempotency-Key: 503, and the record
    stays (another request with the key may have been answered with it already, and the message
    may have reached the broker). The retry, once the queue is back, answers the same task; it
    runs once."""
    nats = NatsServer().start()
    env = app_env(redis_server.url, NatsBroker(nats).env["AGENT_QUEUE_URL"])
    api = AppProcess("api", env).start()
    worker = AppProcess("worker", env).start()
    try:
        with api.client(timeout=BOUND * 3) as client:
            session_id = client.post("/v1/sessions").json()["id"]
            key = {"Idempotency-Key": "queue-down-1"}
            task_id = created_id(API_KEY, "queue-down-1", session_id)

            def start() -> httpx.Response:
                url = f"/v1/sessions/{session_id}/tasks"
                return client.post(url, json={"input": "what is 6*7"}, headers=key)

            assert nats.proc is not None
            os.kill(nats.proc.pid, signal.SIGSTOP)  # the broker hangs: publishes time out
            try:
                refused = start()
            finally:
                os.kill(nats.proc.pid, signal.SIGCONT)
            assert refused.status_code == 503, refused.text
            # Kept: the publish may even have reached the broker before it hung (then it runs).
            kept = client.get(f"/v1/tasks/{task_id}")
            assert kept.status_code == 200 and kept.json()["status"] in ("queued", "running", "succeeded")
            wait_until(lambda: client.get("/readyz").status_code == 200, what="the api to reach the queue")
            again = start()
            assert again.status_code == 202 and again.json()["task_id"] == task_id, again.text
            done = wait_until(
                lambda: (t := client.get(f"/v1/tasks/{task_id}").json())["status"] == "succeeded" and t,
                what="the retried task to run",
            )
            assert done["result"] == "6*7 = 42" and done["attempts"] == 1
    finally:
        worker.stop()
        api.stop()
        nats.stop()
