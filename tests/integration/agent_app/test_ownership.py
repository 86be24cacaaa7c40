"""A session and its tasks belong to the API key that created them: another valid key that
knows their ids is answered as if they did not exist, on every route and by both turn paths
(the fast path and FastAPI's), and nothing it sends reaches them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent_app.keys import CLIENT_FIELD, session_key, task_key
from skyfleet.testing.servers import API_KEY, AppProcess, NatsServer, RedisServer, app_env, wait_until
from tests.support.brokers import NatsBroker

OTHER_KEY = "other-key-0123456789abcdef"


@pytest.fixture(scope="module")
def site(redis_server: RedisServer, nats_server: NatsServer) -> Iterator[AppProcess]:
    env = app_env(
        redis_server.url,
        NatsBroker(nats_server).env["AGENT_QUEUE_URL"],
        AGENT_API_KEYS=f"{API_KEY},{OTHER_KEY}",
    )
    api = AppProcess("api", env).start()
    worker = AppProcess("worker", env).start()
    yield api
    worker.stop()
    api.stop()


def other(api: AppProcess) -> httpx.Client:
    return api.client(headers={"Authorization": f"Bearer {OTHER_KEY}"})


def not_found(response: httpx.Response, unknown: httpx.Response) -> None:
    """404, worded as for an id nobody has (less the id): the answer tells nothing."""
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"
    assert response.json()["message"].split("'")[::2] == unknown.json()["message"].split("'")[::2]


def succeeded(client: httpx.Client, task_id: str) -> dict[str, Any]:
    return wait_until(
        lambda: (t := client.get(f"/v1/tasks/{task_id}").json())["status"] == "succeeded" and t,
        timeout=40,
        interval=0.1,
        what=f"task {task_id} to succeed",
    )


@pytest.mark.parametrize("media_type", ["application/json", "application/vnd.skyfleet+json"])
def test_another_key_cannot_read_or_write_a_session(site: AppProcess, media_type: str) -> None:
    with site.client() as owner, other(site) as stranger:
        session_id = owner.post("/v1/sessions", json={"metadata": {"team": "a"}}).json()["id"]
        assert (
            owner.post(f"/v1/sessions/{session_id}/messages", json={"content": "my name is Ada"}).status_code
            == 200
        )
        task_id = owner.post(f"/v1/sessions/{session_id}/tasks", json={"input": "what is 6*7"}).json()[
            "task_id"
        ]
        assert succeeded(owner, task_id)["result"] == "6*7 = 42"
        before = owner.get(f"/v1/sessions/{session_id}").json()

        nobody = "0" * 32
        turn = {"content": "what is my name?"}
        headers = {"content-type": media_type}  # JSON: the fast path; the other: FastAPI's route
        not_found(stranger.get(f"/v1/sessions/{session_id}"), stranger.get(f"/v1/sessions/{nobody}"))
        not_found(
            stranger.post(f"/v1/sessions/{session_id}/messages", json=turn, headers=headers),
            stranger.post(f"/v1/sessions/{nobody}/messages", json=turn, headers=headers),
        )
        not_found(
            stranger.post(f"/v1/sessions/{session_id}/tasks", json={"input": "x"}),
            stranger.post(f"/v1/sessions/{nobody}/tasks", json={"input": "x"}),
        )
        not_found(stranger.get(f"/v1/tasks/{task_id}"), stranger.get(f"/v1/tasks/{nobody}"))

        # Nothing the other key sent reached the session, and its owner carries on.
        assert owner.get(f"/v1/sessions/{session_id}").json() == before
        recall = owner.post(f"/v1/sessions/{session_id}/messages", json=turn, headers=headers)
        assert recall.status_code == 200 and recall.json()["reply"]["content"] == "Your name is Ada."


def test_a_task_a_turn_starts_is_its_callers(site: AppProcess) -> None:
    with site.client() as owner, other(site) as stranger:
        session_id = owner.post("/v1/sessions").json()["id"]
        turn = owner.post(
            f"/v1/sessions/{session_id}/messages", json={"content": "what is 5*5 in the background"}
        )
        assert turn.status_code == 200, turn.text
        task_id = turn.json()["task_id"]
        assert task_id, turn.json()
        assert succeeded(owner, task_id)["result"] == "5*5 = 25"
        assert stranger.get(f"/v1/tasks/{task_id}").status_code == 404


def test_the_same_idempotency_key_names_each_keys_own_session(site: AppProcess) -> None:
    """Two callers who pick the same Idempotency-Key get a session each."""
    with site.client() as owner, other(site) as stranger:
        # Unique to this run: the module's Redis is shared, and a key's id names the same session.
        key = {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
        made = owner.post("/v1/sessions", headers=key)
        assert made.status_code == 201, made.text
        mine = made.json()["id"]
        theirs = stranger.post("/v1/sessions", headers=key).json()["id"]
        assert mine != theirs
        assert owner.post("/v1/sessions", headers=key).json()["id"] == mine
        assert stranger.get(f"/v1/sessions/{mine}").status_code == 404
        assert stranger.get(f"/v1/sessions/{theirs}").status_code == 200


def test_a_record_written_before_records_had_an_owner_stays_every_keys(
    site: AppProcess, redis_server: RedisServer
) -> None:
    """An upgrade loses nobody's session: a record an earlier version wrote (no owner) is
    served to any valid key, as it was then, until it expires."""
    with site.client() as owner, other(site) as stranger:
        session_id = owner.post("/v1/sessions").json()["id"]
        task_id = owner.post(f"/v1/sessions/{session_id}/tasks", json={"input": "what is 2*3"}).json()[
            "task_id"
        ]
        assert succeeded(owner, task_id)["result"] == "2*3 = 6"
        store = redis_server.client()
        store.hdel(session_key(session_id), CLIENT_FIELD)
        store.hdel(task_key(task_id), CLIENT_FIELD)
        assert stranger.get(f"/v1/sessions/{session_id}").status_code == 200
        turn = stranger.post(f"/v1/sessions/{session_id}/messages", json={"content": "hello"})
        assert turn.status_code == 200, turn.text
        assert stranger.get(f"/v1/tasks/{task_id}").json()["result"] == "2*3 = 6"
        assert owner.get(f"/v1/sessions/{session_id}").json()["turns"] == 1
