"""The read-back against a real agent app whose store lost or changed records after the load
saw them: what it counts as lost, and a task that ended failed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import redis as redis_lib

from agent_app.keys import session_key, task_key
from skyfleet.drills.experiment import LoadMix, LoadSpec
from skyfleet.drills.frontdoor import FrontDoor
from skyfleet.drills.load import LoadProcess
from skyfleet.drills.measure import DataCheck, check_targets, measure
from skyfleet.drills.readback import read_back
from skyfleet.drills.records import AckedTurn, LoadRecording
from skyfleet.testing.servers import free_port, wait_until
from tests.integration.drills.conftest import running_site
from tests.support.drills import AgentSite


def _load(site: AgentSite, spec: LoadSpec) -> LoadRecording:
    load = LoadProcess(FrontDoor(site.url, (site.api_key,)), spec)
    load.start()
    wait_until(lambda: not load.running, timeout=60, what="the load process to end")
    rec = load.stop()
    assert load.problems() == ""
    assert all(r.ok for r in rec.records), [r for r in rec.records if not r.ok][:3]
    return rec


def _read_back(site: AgentSite, rec: LoadRecording, drain_seconds: float = 20) -> DataCheck:
    door = FrontDoor(site.url, (site.api_key,))
    return asyncio.run(read_back(door, rec, fault_at=None, drain_seconds=drain_seconds, request_timeout=5))


def _prefix_pair(rec: LoadRecording) -> tuple[AckedTurn, AckedTurn] | None:
    """Two turns of one session, the earlier's marker a prefix of the later's (sf-turn-1 and
    sf-turn-12)."""
    for earlier in rec.turns:
        for later in rec.turns:
            if (
                later.session_id == earlier.session_id
                and later.marker != earlier.marker
                and later.marker.startswith(earlier.marker)
            ):
                return earlier, later
    return None


def test_a_lost_turn_whose_marker_begins_a_kept_ones_is_lost(agent_site: AgentSite) -> None:
    """A turn removed from the store is lost, though a later turn of the same session whose
    marker it begins (sf-turn-1 in sf-turn-12) is still there."""
    # Almost only turns, on few long conversations: turn 1 and turns 10-19 share a session.
    mix = LoadMix(sessions=0.02, messages=1, tasks=0, polls=0)
    spec = LoadSpec(
        rate=40, max_seconds=2, warmup_seconds=0, request_timeout_seconds=5, mix=mix, turns_per_session=40
    )
    rec = _load(agent_site, spec)
    pair = _prefix_pair(rec)
    assert pair is not None, "no session holds two turns whose markers begin alike: the test proves nothing"
    earlier, later = pair
    with redis_lib.Redis.from_url(agent_site.redis.url, decode_responses=True) as store:
        key = session_key(earlier.session_id)
        messages = json.loads(str(store.hget(key, "messages")))
        # The earlier turn's messages (its question and the answer), by the question the load sent.
        (turn_id,) = {
            m["turn_id"]
            for m in messages
            if m["role"] == "user" and m["content"].startswith(f"drill {earlier.marker}:")
        }
        kept = [m for m in messages if m["turn_id"] != turn_id]
        assert len(kept) == len(messages) - 2
        assert any(m["content"].startswith(f"drill {later.marker}:") for m in kept)
        store.hset(key, "messages", json.dumps(kept))
    data = _read_back(agent_site, rec)
    assert data.turns_checked == len(rec.turns)
    assert (data.sessions_lost, data.turns_lost) == (1, 1), data.notes


def test_a_task_whose_record_is_gone_after_it_finished_is_lost(agent_site: AgentSite) -> None:
    """The load saw these tasks finish; their records are deleted before the read-back: they
    are lost, like a session that is gone."""
    mix = LoadMix(sessions=1, messages=1, tasks=3, polls=4)
    spec = LoadSpec(rate=40, max_seconds=2, warmup_seconds=0, request_timeout_seconds=5, mix=mix)
    rec = _load(agent_site, spec)
    finished = [t.task_id for t in rec.tasks.values() if t.final is not None]
    assert len(finished) >= 2, "the load saw fewer than two tasks finish: the test proves nothing"
    gone = finished[:2]
    with redis_lib.Redis.from_url(agent_site.redis.url) as store:
        assert store.delete(*(task_key(t) for t in gone)) == 2
    data = _read_back(agent_site, rec)
    assert data.tasks_checked == len(rec.tasks)
    assert data.tasks_lost == 2, data.notes
    assert all(any(t in note for note in data.notes) for t in gone), data.notes
    assert data.tasks_duplicated == 0 and data.tasks_failed == 0


@pytest.fixture(scope="module")
def failing_site() -> Iterator[AgentSite]:
    """A real site whose worker cannot reach its model (an OpenAI-compatible endpoint on a port
    nothing listens on) and whose queue gives each task one attempt: every task ends failed.
    The api answers turns with the offline model."""
    broken_model = {
        "AGENT_MODEL_BACKEND": "openai",
        "AGENT_MODEL_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    }
    with running_site(max_deliver=1, worker_env=broken_model) as site:
        yield site


def test_a_task_that_ended_failed_is_counted_failed_not_delivered(failing_site: AgentSite) -> None:
    mix = LoadMix(sessions=1, messages=1, tasks=2, polls=1)
    spec = LoadSpec(rate=20, max_seconds=2, warmup_seconds=0, request_timeout_seconds=5, mix=mix)
    rec = _load(failing_site, spec)
    assert rec.tasks, "no task was accepted: the test proves nothing"
    data = _read_back(failing_site, rec, drain_seconds=30)
    assert data.task_statuses == {"failed": len(rec.tasks)}, data.notes
    assert data.tasks_failed == len(rec.tasks) and data.tasks_lost == 0 and data.tasks_duplicated == 0
    # The drill's measurements carry it, and a drill may set a target on it by name.
    m = measure(rec, fault_at=None, restored_at=None, data=data)
    assert m.tasks_failed == len(rec.tasks) and m.tasks_lost == 0
    (result,) = check_targets(m, {"tasks_failed": 0})
    assert result.value == len(rec.tasks) and result.met is False


def test_each_session_and_task_is_used_and_read_back_with_the_key_that_created_it() -> None:
    """Many clients, one API key each, as the lab's drills run: a session is its creator's key's
    alone, so the load sends its turns, tasks and polls with that key and the read-back reads it
    with that key; any other key would be answered 404 and the session counted lost."""
    keys = tuple(f"drill-client-{n}-0123456789abcdef" for n in range(3))
    with running_site(keys=keys) as site:
        spec = LoadSpec(rate=30, max_seconds=4, warmup_seconds=0, request_timeout_seconds=5)
        door = FrontDoor(site.url, keys)
        load = LoadProcess(door, spec)
        load.start()
        wait_until(lambda: not load.running, timeout=60, what="the load process to end")
        rec = load.stop()
        assert load.problems() == ""
        assert all(r.ok for r in rec.records), [r for r in rec.records if not r.ok][:3]
        assert len({rec.client_of(s) % len(keys) for s in rec.sessions}) == len(keys)  # every key used
        for r in rec.records:
            if r.kind in ("message", "task"):
                assert r.client == rec.client_of(r.session_id), r
        check = asyncio.run(read_back(door, rec, fault_at=None, drain_seconds=20, request_timeout=5))
    assert check.sessions_checked == len(rec.sessions) > 0 and check.tasks_checked > 0
    assert (check.sessions_lost, check.turns_lost, check.tasks_lost) == (0, 0, 0), check.notes
