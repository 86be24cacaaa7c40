"""The load process: open loop against a real agent app, its stream, its bounded life."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from agent_app.keys import session_key, task_key
from skyfleet.drills.experiment import LoadMix, LoadSpec
from skyfleet.drills.frontdoor import FrontDoor, LoadTargetError
from skyfleet.drills.load import LOAD_NICENESS, LoadProcess
from skyfleet.drills.measure import measure
from skyfleet.drills.readback import read_back
from skyfleet.testing.servers import free_port, wait_until
from tests.support.drills import AgentSite

ROOT = Path(__file__).resolve().parents[3]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def test_open_loop_every_request_streamed_and_nothing_lost(agent_site: AgentSite) -> None:
    spec = LoadSpec(rate=40, max_seconds=3, warmup_seconds=0, request_timeout_seconds=5)
    load = LoadProcess(FrontDoor(agent_site.url, (agent_site.api_key,)), spec)
    load.start()
    assert load.pid is not None and load.pid != os.getpid()
    # The schedule ends at max_seconds: the process ends on its own, without being told.
    wait_until(lambda: not load.running, timeout=30, what="the load process to end after max_seconds")
    rec = load.stop()
    assert load.problems() == ""
    # Open loop: request i was scheduled at start + i/rate, all rate * max_seconds + 1 of them.
    assert len(rec.records) == spec.max_requests == 121
    scheduled = sorted(r.scheduled for r in rec.records)
    assert all(abs((s - scheduled[0]) - i / spec.rate) < 1e-3 for i, s in enumerate(scheduled))
    assert rec.started_at == pytest.approx(scheduled[0], abs=1e-3) and rec.stopped_at >= scheduled[-1]
    assert all(r.ok and r.site == "test-site" and r.instance for r in rec.records), [
        r for r in rec.records if not r.ok
    ][:3]
    # What the drill process folded from the stream is what the load did.
    kinds = {k: sum(r.kind == k for r in rec.records) for k in ("session", "message", "task", "poll")}
    assert len(rec.sessions) == kinds["session"] > 0
    assert len(rec.turns) == kinds["message"] > 0 and all(t.marker.startswith("sf-turn-") for t in rec.turns)
    assert len(rec.tasks) == kinds["task"] > 0
    m = measure(rec, fault_at=None, restored_at=None)
    assert m.total_requests == 121 and m.failed_requests == 0
    assert m.send_lag_ms.count == 121 and m.latency_ms.before.p99 is not None
    data = asyncio.run(
        read_back(
            FrontDoor(agent_site.url, (agent_site.api_key,)),
            rec,
            fault_at=None,
            drain_seconds=20,
            request_timeout=5,
        )
    )
    assert data.turns_checked == len(rec.turns) and data.turns_lost == 0 and data.sessions_lost == 0
    assert data.tasks_checked == len(rec.tasks) and data.tasks_lost == 0 and data.tasks_duplicated == 0
    assert data.tasks_failed == 0 and data.task_statuses == {"succeeded": len(rec.tasks)}


def test_a_user_whose_session_is_gone_starts_a_new_one(agent_site: AgentSite) -> None:
    """The store loses every session mid-load (as the next site has none of a lost site's):
    each user's next request gets 404 once, then they start over; nobody retries a lost session
    for the rest of the run. The read-back then counts as lost what the store lost."""
    import redis as redis_lib

    spec = LoadSpec(rate=40, max_seconds=6, warmup_seconds=0, request_timeout_seconds=5)
    door = FrontDoor(agent_site.url, (agent_site.api_key,))
    load = LoadProcess(door, spec)
    load.start()
    wait_until(lambda: len(load.recording.sessions) >= 10, timeout=30, what="ten sessions")
    flushing_at = time.time()
    with redis_lib.Redis.from_url(agent_site.redis.url) as store:
        store.flushall()
    lost_at = time.time()
    wait_until(lambda: not load.running, timeout=60, what="the load process to end")
    rec = load.stop()
    misses = [r for r in rec.records if r.status == 404 and r.kind in ("message", "task")]
    assert misses, "no request reached a lost session: the test proves nothing"
    per_session = [r.session_id for r in misses]
    assert len(per_session) == len(set(per_session)), "a lost session was retried after its 404"
    # A create sent before the flush returned may have been written before it (and answered
    # after it, on a busy machine); one sent after it cannot have been lost.
    lost = {r.session_id for r in rec.records if r.kind == "session" and r.ok and r.sent < lost_at}
    assert set(per_session) <= lost  # sessions opened after the loss are served

    # The read-back counts as lost exactly what the store no longer holds: every session, turn
    # and task acknowledged before the flush (tasks the load saw finish included), none after.
    with redis_lib.Redis.from_url(agent_site.redis.url) as store:
        gone = {s for s in rec.sessions if not store.exists(session_key(s))}
        gone_tasks = {t for t in rec.tasks if not store.exists(task_key(t))}
    stored_before = {
        r.session_id for r in rec.records if r.kind == "session" and r.ok and r.completed < flushing_at
    }
    assert stored_before <= gone <= lost
    tasks_before = {t.task_id for t in rec.tasks.values() if t.accepted_at < flushing_at}
    assert tasks_before <= gone_tasks
    assert any(rec.tasks[t].final is not None for t in tasks_before), (
        "the load saw no task finish before the flush"
    )
    assert len(gone) < len(rec.sessions), (
        "no session was opened after the flush: the read-back's kept ones are untested"
    )
    data = asyncio.run(read_back(door, rec, fault_at=None, drain_seconds=20, request_timeout=5))
    assert data.sessions_checked == len(rec.sessions) and data.sessions_lost == len(gone)
    assert data.turns_lost == sum(1 for t in rec.turns if t.session_id in gone) > 0
    assert data.tasks_checked == len(rec.tasks) and data.tasks_lost == len(gone_tasks) > 0, data.notes


def test_a_users_conversation_ends_after_turns_per_session(agent_site: AgentSite) -> None:
    """Turns crowd onto the few idle sessions (here: almost no new sessions), yet none is sent
    more than ``turns_per_session``: the user starts another, as one would at the app's history
    limit, instead of getting its 413."""
    mix = LoadMix(sessions=0.05, messages=1, tasks=0, polls=0)
    spec = LoadSpec(
        rate=40, max_seconds=3, warmup_seconds=0, request_timeout_seconds=5, mix=mix, turns_per_session=3
    )
    load = LoadProcess(FrontDoor(agent_site.url, (agent_site.api_key,)), spec)
    load.start()
    wait_until(lambda: not load.running, timeout=30, what="the load process to end")
    rec = load.stop()
    assert all(r.ok for r in rec.records), [r for r in rec.records if not r.ok][:3]
    turns = Counter(r.session_id for r in rec.records if r.kind == "message")
    assert max(turns.values()) == 3, turns  # conversations reached the bound, and none went past it


def test_a_stalled_drill_process_does_not_delay_the_load(agent_site: AgentSite) -> None:
    """The drill process holding its GIL (an import, a TLS context...) for 2 s: the load, in
    its own process, still sends the requests due meanwhile on schedule."""
    stall = 2.0
    spec = LoadSpec(rate=50, max_seconds=4, warmup_seconds=0, request_timeout_seconds=5)
    load = LoadProcess(FrontDoor(agent_site.url, (agent_site.api_key,)), spec)
    load.start()
    assert load.pid is not None
    if os.geteuid() == 0:  # the clock runs ahead of the system under test where it may
        assert os.getpriority(os.PRIO_PROCESS, load.pid) == LOAD_NICENESS
        assert os.getpriority(os.PRIO_PROCESS, agent_site.api.proc.pid) <= 0  # the system it measures
    time.sleep(1.0)
    stalled_from = time.time()
    ctypes.PyDLL(None).usleep(int(stall * 1e6))  # libc usleep without releasing the GIL
    stalled_to = time.time()
    assert stalled_to - stalled_from >= stall
    wait_until(lambda: not load.running, timeout=30, what="the load process to end after max_seconds")
    rec = load.stop()
    during = [r for r in rec.records if stalled_from <= r.scheduled <= stalled_to]
    assert len(during) >= stall * spec.rate - 1, "requests due during the stall were not sent"
    # A generator sharing the drill's GIL sends these up to the whole stall late, half of it
    # for the median one; a busy machine delays a few, not the median.
    lags = sorted(r.sent - r.scheduled for r in during)
    median = lags[len(lags) // 2]
    assert median < stall / 4, f"median send lag {median:.3f} s during a {stall:g} s stall; {lags}"
    assert len(rec.records) == spec.max_requests


def test_failures_are_recorded_by_kind_and_the_schedule_holds(tmp_path: Path) -> None:
    """Nothing listens: every request fails (no response), and still leaves on schedule."""
    spec = LoadSpec(rate=20, max_seconds=1, warmup_seconds=0, request_timeout_seconds=2)
    load = LoadProcess(FrontDoor(f"http://127.0.0.1:{free_port()}", ("key",)), spec)
    load.start()
    wait_until(lambda: not load.running, timeout=30, what="the load process to end")
    rec = load.stop()
    assert len(rec.records) == spec.max_requests == 21
    assert all(r.status is None and r.error and r.error.startswith("ConnectError") for r in rec.records)
    # With no session ever created, every request is a new user's first one.
    m = measure(rec, fault_at=None, restored_at=None)
    assert m.errors_by_kind == {"session:no-response": 21}
    assert m.failed_requests == 21 and m.latency_ms.before.count == 0


def test_the_load_process_ends_with_the_drill_process(agent_site: AgentSite) -> None:
    """A drill process killed by SIGKILL (no cleanup runs) leaves no load behind."""
    script = (
        "import sys, time\n"
        "from skyfleet.drills.experiment import LoadSpec\n"
        "from skyfleet.drills.frontdoor import FrontDoor\n"
        "from skyfleet.drills.load import LoadProcess\n"
        f"door = FrontDoor({agent_site.url!r}, ({agent_site.api_key!r},))\n"
        "load = LoadProcess(door, LoadSpec(rate=5, max_seconds=600))\n"
        "load.start()\n"
        "print(load.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    drill = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert drill.stdout is not None
        child = int(drill.stdout.readline())
        assert not _gone(child)
        drill.send_signal(signal.SIGKILL)
        drill.wait(10)
        wait_until(lambda: _gone(child), timeout=30, what=f"load process {child} to end after its parent")
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.wait(10)


def test_the_load_goes_to_loopback_or_the_labs_own_network_only() -> None:
    with pytest.raises(LoadTargetError, match="only loopback front doors"):
        LoadProcess(FrontDoor("http://10.0.0.1:8080", ("key",)), LoadSpec())
    with pytest.raises(LoadTargetError, match="needs the lab's network"):
        LoadProcess(FrontDoor("https://api.example.com", ("key",), dns=("10.0.0.1", 53)), LoadSpec())
