"""The HTTP API of a real ``python -m agent_app.api`` process over real Redis and NATS."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from agent_app.contract import INSTANCE_HEADER, REQUEST_ID_HEADER, SITE_HEADER
from skyfleet.testing.servers import API_KEY, AppProcess, NatsServer, Proc, RedisServer, app_env, wait_until
from tests.support.brokers import NatsBroker

TURN_ROUTE = "/v1/sessions/{session_id}/messages"
SECOND_KEY = "second-key-0123456789abcdef"
RATE_KEY = "rate-key-0123456789abcdef"
FRESH_KEY = "fresh-key-0123456789abcdef"


def new_session(client: httpx.Client) -> str:
    response = client.post("/v1/sessions", json={"metadata": {"team": "qa"}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def say(client: httpx.Client, session_id: str, text: str) -> httpx.Response:
    return client.post(f"/v1/sessions/{session_id}/messages", json={"content": text})


def test_full_session_flow(api: AppProcess) -> None:
    with api.client() as client:
        created = client.post("/v1/sessions", headers={REQUEST_ID_HEADER: "req-flow-1"})
        assert created.status_code == 201
        assert created.headers[REQUEST_ID_HEADER] == "req-flow-1"
        assert created.headers[SITE_HEADER] == "test-site"
        assert created.headers[INSTANCE_HEADER] == f"api-{api.port}"
        session_id = created.json()["id"]

        first = say(client, session_id, "my name is Ada")
        assert first.status_code == 200
        assert first.json()["turn"] == 1
        assert "Ada" in first.json()["reply"]["content"]

        calc = say(client, session_id, "what is (2+3)*4?").json()
        assert calc["reply"]["content"] == "(2+3)*4 = 20"
        assert calc["reply"]["tool_calls"][0]["name"] == "calculator"

        recall = say(client, session_id, "what is my name?").json()
        assert recall["reply"]["content"] == "Your name is Ada."  # answered from the stored history
        assert recall["turn"] == 3

        history = client.get(f"/v1/sessions/{session_id}")
        assert history.status_code == 200
        body = history.json()
        assert body["turns"] == 3
        assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 3
        assert [m["content"] for m in body["messages"][::2]] == [
            "my name is Ada",
            "what is (2+3)*4?",
            "what is my name?",
        ]
        assert history.headers[REQUEST_ID_HEADER]  # generated when the client sends none


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Every core kept busy by another process (bounded to a minute), as on a loaded machine."""
    loop = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
    burners = [Proc("burner", [sys.executable, "-c", loop]).start() for _ in range(os.cpu_count() or 2)]
    yield
    for burner in burners:
        burner.kill()


def turn_in(reply: dict[str, Any]) -> int:
    """Which turn of the conversation the offline model saw itself answering."""
    match = re.search(r"This is turn (\d+) of our conversation", reply["reply"]["content"])
    assert match, reply
    return int(match.group(1))


@pytest.mark.parametrize("media_type", ["application/json", "application/vnd.skyfleet+json"])
def test_concurrent_turns_on_one_session_are_taken_in_turn(
    api: AppProcess, busy_cores: None, media_type: str
) -> None:
    """Concurrent turns on one session all succeed, whatever the load, and run one after
    another: each sees every turn stored before it, none is lost or stored twice."""
    with api.client() as client:
        session_id = new_session(client)
    texts = [f"concurrent message {i}" for i in range(12)]
    start = threading.Barrier(len(texts))

    def send(text: str) -> httpx.Response:
        with api.client(timeout=60) as c:
            start.wait()
            return c.post(
                f"/v1/sessions/{session_id}/messages",
                json={"content": text},
                headers={"content-type": media_type},
            )

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        responses = list(pool.map(send, texts))
    assert [r.status_code for r in responses] == [200] * len(texts), [r.text for r in responses]
    replies = [r.json() for r in responses]
    # Each turn was answered knowing all the turns before it, and got its own number.
    assert sorted(r["turn"] for r in replies) == list(range(1, len(texts) + 1))
    assert all(turn_in(r) == r["turn"] for r in replies)
    with api.client() as client:
        body = client.get(f"/v1/sessions/{session_id}").json()
    assert body["turns"] == len(texts)
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    assert sorted(users) == sorted(texts)
    # every user message is directly followed by its own reply, in the order they were taken
    for number, (user, reply) in enumerate(
        zip(body["messages"][::2], body["messages"][1::2], strict=True), 1
    ):
        assert user["turn_id"] == reply["turn_id"]
        assert f"This is turn {number} of" in reply["content"]


@pytest.mark.parametrize("media_type", ["application/json", "application/vnd.skyfleet+json"])
def test_a_retried_turn_is_answered_once(api: AppProcess, media_type: str) -> None:
    """A retry after a lost reply, and a double submit, with the same Idempotency-Key: one
    turn stored, every request answered 200 with its reply; the key with another message: 422."""
    with api.client() as client:
        session_id = new_session(client)
        url = f"/v1/sessions/{session_id}/messages"

        def send(text: str, key: str) -> httpx.Response:
            headers = {"content-type": media_type, "Idempotency-Key": key}
            return client.post(url, content=json.dumps({"content": text}).encode(), headers=headers)

        first = send("my name is Ada", "key-1")
        retried = send("my name is Ada", "key-1")
        quoted = send("my name is Ada", '"key-1"')  # the draft standard's quoted form
        assert first.status_code == retried.status_code == quoted.status_code == 200
        assert first.json() == retried.json() == quoted.json()
        other = send("what is my name?", "key-2")
        assert other.json()["turn"] == 2
        assert other.json()["reply"]["content"] == "Your name is Ada."
        reused = send("something else", "key-1")
        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"
        stored = client.get(f"/v1/sessions/{session_id}").json()
    assert stored["turns"] == 2
    assert [m["content"] for m in stored["messages"][::2]] == ["my name is Ada", "what is my name?"]


def test_a_session_created_again_with_its_idempotency_key_is_made_once(api: AppProcess) -> None:
    """A create sent again with the same key (a retry after a lost answer, or a double submit
    at once) answers the session the first made; the key with other metadata is 422."""
    key = {"Idempotency-Key": "create-1"}

    def create(user: str) -> httpx.Response:
        with api.client() as client:
            return client.post("/v1/sessions", json={"metadata": {"user": user}}, headers=key)

    with ThreadPoolExecutor(max_workers=3) as pool:
        made = list(pool.map(create, ["ada"] * 3))
    assert [r.status_code for r in made] == [201] * 3, [r.text for r in made]
    assert len({json.dumps(r.json(), sort_keys=True) for r in made}) == 1
    assert create("ada").json() == made[0].json()
    other = create("bob")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    with api.client() as client:
        assert (
            client.post("/v1/sessions", json={"metadata": {"user": "ada"}}).json()["id"]
            != made[0].json()["id"]
        )


def test_a_double_submit_is_not_an_error(api: AppProcess, busy_cores: None) -> None:
    """The same message sent several times at once with one key (a UI's double click, a
    client retrying before the first answer): all 200 with the same reply, stored once."""
    with api.client() as client:
        session_id = new_session(client)
    start = threading.Barrier(4)

    def send(_: int) -> httpx.Response:
        with api.client(timeout=60, headers={"Idempotency-Key": "double-1"}) as c:
            start.wait()
            return say(c, session_id, "hello once")

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(send, range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    with api.client() as client:
        assert client.get(f"/v1/sessions/{session_id}").json()["turns"] == 1


def test_a_malformed_idempotency_key_is_refused_by_name(api: AppProcess) -> None:
    with api.client() as client:
        session_id = new_session(client)
        for key in [b"", b"x" * 256, "café".encode(), b"a b"]:
            response = client.post(
                f"/v1/sessions/{session_id}/messages",
                json={"content": "hi"},
                headers=[(b"Idempotency-Key", key)],
            )
            assert response.status_code == 422, (key, response.text)
            assert ["header", "Idempotency-Key"] in [d["loc"] for d in response.json()["details"]]
        assert client.get(f"/v1/sessions/{session_id}").json()["turns"] == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789abcdef"}, {"Authorization": f"Basic {API_KEY}"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_unauthorized(api: AppProcess, headers: dict[str, str]) -> None:
    response = httpx.post(api.url + "/v1/sessions", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers[REQUEST_ID_HEADER] == response.json()["request_id"]


def test_not_found(api: AppProcess) -> None:
    with api.client() as client:
        for response in (
            client.get("/v1/sessions/doesnotexist"),
            say(client, "doesnotexist", "hello"),
            client.post("/v1/sessions/doesnotexist/tasks", json={"input": "x"}),
            client.get("/v1/tasks/doesnotexist"),
            client.get("/v1/nothing-here"),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "not_found"


def test_malformed_requests_get_422(api: AppProcess) -> None:
    with api.client() as client:
        session_id = new_session(client)
        url = f"/v1/sessions/{session_id}/messages"
        cases = [
            client.post(url, content=b"{not json", headers={"content-type": "application/json"}),
            client.post(url, json={}),
            client.post(url, json={"content": ""}),
            client.post(url, json={"content": "hi", "extra": 1}),
            client.post(url, json={"content": 42}),
            client.post(url, json={"content": "x" * 4001}),
            client.post(f"/v1/sessions/{session_id}/tasks", json={"input": "x", "work_seconds": -1}),
            client.get("/v1/sessions/bad%20id!"),
        ]
        for response in cases:
            assert response.status_code == 422, response.text
            body = response.json()
            assert body["code"] == "invalid_request"
            assert body["details"]


def test_oversized_body_gets_413(api: AppProcess) -> None:
    with api.client() as client:
        session_id = new_session(client)
        big = b'{"content": "' + b"x" * (70 * 1024) + b'"}'
        response = client.post(
            f"/v1/sessions/{session_id}/messages", content=big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["code"] == "too_large"

        def chunks() -> Iterator[bytes]:  # no content-length: the limit applies while reading
            yield big[:40_000]
            yield big[40_000:]

        chunked = client.post(
            f"/v1/sessions/{session_id}/messages",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        # A body is bounded whatever the method: a fleet site reads it to pass the request on.
        read = client.request("GET", f"/v1/sessions/{session_id}", content=chunks())
        assert read.status_code == 413 and read.json()["code"] == "too_large"


@pytest.fixture(scope="module")
def limited_api(redis_server: RedisServer, nats_server: NatsServer) -> Iterator[AppProcess]:
    env = app_env(
        redis_server.url,
        NatsBroker(nats_server).env["AGENT_QUEUE_URL"],
        AGENT_RATE_LIMIT_PER_MINUTE="6",
        AGENT_SESSION_MAX_TURNS="2",
        AGENT_API_KEYS=f"{API_KEY},{SECOND_KEY}\n{RATE_KEY}, {FRESH_KEY}",
    )
    proc = AppProcess("api", env).start()
    yield proc
    proc.stop()


def test_history_limit_gets_413(limited_api: AppProcess, redis_server: RedisServer) -> None:
    with limited_api.client(headers={"Authorization": f"Bearer {SECOND_KEY}"}) as client:
        session_id = new_session(client)
        assert say(client, session_id, "one").status_code == 200
        assert say(client, session_id, "two").status_code == 200
        full = say(client, session_id, "three")
        assert full.status_code == 413
        assert full.json()["code"] == "too_large"
        assert "2 turns" in full.json()["message"]
        assert client.get(f"/v1/sessions/{session_id}").json()["turns"] == 2  # nothing half-applied


def test_task_reports_fill_a_session_only_to_its_limit(
    redis_server: RedisServer, nats_server: NatsServer
) -> None:
    """Task reports are no turns, but they are history: with one turn allowed, a session holds
    6 messages at most (MESSAGES_PER_TURN). A task create that would pass that is refused, and
    a report that no longer fits is kept on its task only."""
    env = app_env(
        redis_server.url, NatsBroker(nats_server).env["AGENT_QUEUE_URL"], AGENT_SESSION_MAX_TURNS="1"
    )
    api = AppProcess("api", env).start()
    worker: AppProcess | None = None
    try:
        with api.client() as client:

            def done(task_id: str) -> dict[str, Any]:
                return wait_until(
                    lambda: (t := client.get(f"/v1/tasks/{task_id}").json())["status"] == "succeeded" and t,
                    timeout=40,
                    interval=0.1,
                    what=f"task {task_id} to succeed",
                )

            def task(session_id: str) -> httpx.Response:
                return client.post(f"/v1/sessions/{session_id}/tasks", json={"input": "what is 6*7"})

            session_id = new_session(client)
            assert say(client, session_id, "hello").status_code == 200
            held = len(client.get(f"/v1/sessions/{session_id}").json()["messages"])
            assert held < 5
            # Two creates while there is room for one report: both accepted (no worker yet).
            for _ in range(5 - held):
                r = task(session_id)
                assert r.status_code == 202, r.text
            last = [task(session_id), task(session_id)]
            assert [r.status_code for r in last] == [202, 202]
            worker = AppProcess("worker", env).start()
            results = [done(r.json()["task_id"])["result"] for r in last]
            assert results == ["6*7 = 42", "6*7 = 42"]  # the one that did not fit: on its task
            wait_until(
                lambda: len(client.get(f"/v1/sessions/{session_id}").json()["messages"]) == 6,
                timeout=40,
                interval=0.1,
                what="the session to hold its reports",
            )
            full = task(session_id)
            assert full.status_code == 413 and "6 messages" in full.json()["message"], full.text
            assert len(client.get(f"/v1/sessions/{session_id}").json()["messages"]) == 6
    finally:
        if worker is not None:
            worker.stop()
        api.stop()


def test_rate_limit_is_per_key_and_gets_429(limited_api: AppProcess) -> None:
    with limited_api.client(headers={"Authorization": f"Bearer {RATE_KEY}"}) as client:
        statuses = [client.get("/v1/tasks/unknown").status_code for _ in range(6)]
        assert statuses == [404] * 6
        limited = client.get("/v1/tasks/unknown")
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
    with limited_api.client(headers={"Authorization": f"Bearer {FRESH_KEY}"}) as client:
        assert client.get("/v1/tasks/unknown").status_code == 404  # another key has its own budget
    # A second api instance shares the budget through Redis.
    other = AppProcess("api", limited_api.env).start()
    try:
        with other.client(headers={"Authorization": f"Bearer {RATE_KEY}"}) as client:
            assert client.get("/v1/tasks/unknown").status_code == 429
    finally:
        other.stop()


def test_health_readiness_and_metrics(api: AppProcess) -> None:
    assert httpx.get(api.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(api.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"draining": "ok", "redis": "ok", "queue": "ok"}
    with api.client() as client:
        say(client, new_session(client), "hello")
    text = httpx.get(api.url + "/metrics").text
    assert (
        'agent_http_request_duration_seconds_bucket{le="0.02",method="POST",route="/v1/sessions/{session_id}/messages",status="200"}'
        in text
    )
    assert 'agent_turns_total{outcome="ok"}' in text
    assert "agent_errors_total" in text


LATENCY_COUNT = "agent_http_request_duration_seconds_count"
# FastAPI reads "+json" media types as JSON; the turn fast path takes only application/json,
# so this content type sends an otherwise identical turn through the FastAPI route.
VIA_FASTAPI = {"content-type": "application/vnd.skyfleet+json"}


def test_turn_fast_path_answers_as_the_fastapi_route(api: AppProcess) -> None:
    """The same turns and errors, once through the fast path and once through FastAPI."""

    def turn(client: httpx.Client, session_id: str, headers: dict[str, str]) -> httpx.Response:
        body = b'{"content": "hello there"}'
        return client.post(f"/v1/sessions/{session_id}/messages", content=body, headers=headers)

    def shape(response: httpx.Response) -> tuple[int, list[str], str, dict[str, Any]]:
        body = response.json()
        body.pop("request_id", None)
        if "reply" in body:
            body["reply"] = {k: type(v).__name__ for k, v in body["reply"].items()}
        return response.status_code, sorted(response.headers), response.headers["content-type"], body

    before = api.metric(LATENCY_COUNT, method="POST", route=TURN_ROUTE, status="200")
    with api.client() as client:
        session_id = new_session(client)
        fast = turn(client, session_id, {"content-type": "application/json"})
        routed = turn(client, session_id, VIA_FASTAPI)
        assert fast.status_code == routed.status_code == 200
        assert fast.json()["turn"] == 1 and routed.json()["turn"] == 2
        assert fast.json()["reply"]["content"].endswith("turn 1 of our conversation.")
        assert routed.json()["reply"]["content"].endswith("turn 2 of our conversation.")
        assert shape(fast)[:3] == shape(routed)[:3]
        assert {k: v for k, v in shape(fast)[3].items() if k != "turn"} == {
            k: v for k, v in shape(routed)[3].items() if k != "turn"
        }
        for session, headers in (
            ("doesnotexist", {}),
            (session_id, {"Authorization": "Bearer wrong-key-0123456789abcdef"}),
        ):
            a = turn(client, session, {"content-type": "application/json", **headers})
            b = turn(client, session, {**VIA_FASTAPI, **headers})
            assert a.status_code in (401, 404)
            assert shape(a) == shape(b)
            assert a.json()["request_id"] == a.headers[REQUEST_ID_HEADER]
        stored = client.get(f"/v1/sessions/{session_id}").json()
    assert stored["turns"] == 2
    assert [m["content"] for m in stored["messages"][::2]] == ["hello there", "hello there"]
    # both paths are measured under the route's template
    after = api.metric(LATENCY_COUNT, method="POST", route=TURN_ROUTE, status="200")
    assert after - before == 2


def access_lines(api: AppProcess, request_id: str) -> list[dict[str, Any]]:
    lines = []
    for line in api.output().splitlines():
        if request_id in line:
            entry = json.loads(line)
            if entry.get("logger") == "agent_app.access" and entry.get("request_id") == request_id:
                lines.append(entry)
    return lines


def test_access_log_line_per_request_with_ids(api: AppProcess) -> None:
    with api.client() as client:
        session_id = new_session(client)
        ok = client.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": "hello"},
            headers={REQUEST_ID_HEADER: "req-log-turn"},
        )
        bad = client.post(
            f"/v1/sessions/{session_id}/messages", json={}, headers={REQUEST_ID_HEADER: "req-log-invalid"}
        )
    assert (ok.status_code, bad.status_code) == (200, 422)
    turn_line = wait_until(lambda: access_lines(api, "req-log-turn"), what="the turn's access line")
    assert len(turn_line) == 1
    assert turn_line[0] | {"duration_ms": 0, "ts": ""} == {
        "ts": "",
        "level": "info",
        "logger": "agent_app.access",
        "msg": "request",
        "site": "test-site",
        "instance": f"api-{api.port}",
        "process": "api",
        "request_id": "req-log-turn",
        "session_id": session_id,
        "method": "POST",
        "path": f"/v1/sessions/{session_id}/messages",
        "route": TURN_ROUTE,
        "status": 200,
        "duration_ms": 0,
    }
    invalid = wait_until(lambda: access_lines(api, "req-log-invalid"), what="the 422's access line")
    assert [(e["status"], e["route"]) for e in invalid] == [(422, TURN_ROUTE)]
