"""SIGTERM ends both processes within ``AGENT_SHUTDOWN_GRACE_SECONDS``, whatever their
dependencies are doing: alive, killed in either order before or after the signal, hung
(SIGSTOP), or a Pub/Sub endpoint that takes calls and never answers, with work in flight.

Each scenario has its own redis-server and nats-server, so killing them touches no other test.
The bound checked is the grace period plus ``OBSERVED`` for this test's own observation.
Before, the worker with every slot busy stayed up until a task finished (minutes), a worker
with a Pub/Sub call left hanging about 9 s at a 3 s grace, and the api about 1.2 s past it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from agent_app.process import BACKSTOP_SECONDS, EXIT_FORCED
from skyfleet.testing.servers import REPO, AppProcess, NatsServer, RedisServer, app_env, wait_until
from tests.integration.agent_app.chat_server import ChatServer
from tests.support.brokers import NatsBroker, PubSubBroker
from tests.support.priority import default_priority
from tests.support.pubsub_server import PubSubServer

GRACE = 3.0
# The exit must come within the grace period; this test sees it up to OBSERVED later (the
# signal's delivery and the wait's return on a busy machine), and gives up at GIVE_UP.
OBSERVED = 1.0
GIVE_UP = GRACE + 7.0
LONG_TASK_SECONDS = 300  # far past any bound here: a task that must be handed back, not awaited


@pytest.fixture(autouse=True)
def at_default_priority() -> Iterator[None]:
    """Exit deadlines are timing: this test and the app processes it starts run at the default
    CPU priority, whatever the tier's (CI lowers it beside the lab tier)."""
    with default_priority():
        yield


@dataclass
class Deps:
    redis: RedisServer
    nats: NatsServer

    def fault(self, how: str) -> None:
        """``kill:<names>`` kills them in that order; ``hang`` stops both (SIGSTOP)."""
        kind, _, names = how.partition(":")
        for name in names.split(",") if kind == "kill" else ["redis", "nats"]:
            server = self.redis if name == "redis" else self.nats
            assert server.proc is not None
            if kind == "kill":
                server.proc.kill()
            else:
                server.proc.signal(signal.SIGSTOP)

    def heal(self) -> None:
        for server in (self.redis, self.nats):
            if server.proc is not None:
                server.proc.signal(signal.SIGCONT)


@pytest.fixture
def deps() -> Iterator[Deps]:
    deps = Deps(RedisServer().start(), NatsServer().start())
    yield deps
    deps.heal()
    deps.redis.stop()
    deps.nats.stop()


def stop_time(proc: AppProcess) -> tuple[int, float]:
    """SIGTERM, then the exit code and how long the exit took."""
    started, sent = time.monotonic(), time.strftime("%H:%M:%S", time.gmtime())
    proc.proc.signal(signal.SIGTERM)
    try:
        code = proc.proc.wait(GIVE_UP)
    except Exception:
        proc.proc.kill()
        raise AssertionError(
            f"{proc.kind} still running {GIVE_UP} s after SIGTERM (grace {GRACE} s):\n"
            + proc.output()[-4000:]
        ) from None
    took = time.monotonic() - started
    assert took <= GRACE + OBSERVED, (
        f"{proc.kind} took {took:.2f} s to exit with {code} after SIGTERM at {sent} UTC (grace {GRACE} s):\n"
        + proc.output()[-4000:]
    )
    return code, took


def start_long_tasks(api: AppProcess, count: int) -> list[str]:
    with api.client() as client:
        session_id = client.post("/v1/sessions").json()["id"]
        return [
            client.post(
                f"/v1/sessions/{session_id}/tasks",
                json={"input": "what is 2+2", "work_seconds": LONG_TASK_SECONDS},
            ).json()["task_id"]
            for _ in range(count)
        ]


def statuses(api: AppProcess, task_ids: list[str]) -> list[str]:
    with api.client() as client:
        return [client.get(f"/v1/tasks/{t}").json()["status"] for t in task_ids]


@dataclass
class BusyWorker:
    api: AppProcess
    worker: AppProcess
    tasks: list[str]


@pytest.fixture
def busy_worker(deps: Deps) -> Iterator[BusyWorker]:
    """A worker with both of its slots running long tasks and two more tasks queued."""
    env = app_env(
        deps.redis.url,
        NatsBroker(deps.nats).env["AGENT_QUEUE_URL"],
        AGENT_SHUTDOWN_GRACE_SECONDS=str(GRACE),
        AGENT_WORKER_CONCURRENCY="2",
    )
    api = AppProcess("api", env).start()
    worker = AppProcess("worker", env).start()
    try:
        tasks = start_long_tasks(api, 4)
        wait_until(lambda: statuses(api, tasks).count("running") == 2, what="both slots busy")
        yield BusyWorker(api, worker, tasks)
    finally:
        worker.proc.kill()
        api.proc.kill()


def test_worker_with_every_slot_busy_stops_within_grace_and_hands_tasks_back(busy_worker: BusyWorker) -> None:
    """The fault behind issue #15: with all slots running long tasks, the worker waited for
    one of them to finish before it even looked at the SIGTERM."""
    code, _ = stop_time(busy_worker.worker)
    assert code == 0
    assert statuses(busy_worker.api, busy_worker.tasks) == ["queued"] * 4  # handed back, none lost
    assert "worker drained" in busy_worker.worker.output()


@pytest.mark.parametrize(
    ("fault", "when"),
    [
        ("kill:nats,redis", "before"),
        ("kill:redis,nats", "before"),
        ("kill:nats,redis", "after"),
        ("kill:redis,nats", "after"),
        ("hang", "before"),
    ],
)
def test_worker_stops_within_grace_whatever_its_dependencies_do(
    busy_worker: BusyWorker, deps: Deps, fault: str, when: str
) -> None:
    if when == "before":
        deps.fault(fault)
        code, _ = stop_time(busy_worker.worker)
    else:
        timer = threading.Timer(0.2, deps.fault, args=(fault,))
        timer.start()
        code, _ = stop_time(busy_worker.worker)
        timer.join()
    assert code in (0, EXIT_FORCED)


@pytest.mark.parametrize("fault", ["kill:nats,redis", "kill:redis,nats", "hang"])
def test_api_stops_within_grace_with_turns_in_flight(deps: Deps, fault: str) -> None:
    chat = ChatServer().start()
    chat.delay = 60.0  # a model call still running when the grace period ends
    env = app_env(
        deps.redis.url,
        NatsBroker(deps.nats).env["AGENT_QUEUE_URL"],
        AGENT_SHUTDOWN_GRACE_SECONDS=str(GRACE),
        AGENT_MODEL_BACKEND="openai",
        AGENT_MODEL_BASE_URL=chat.base_url,
    )
    api = AppProcess("api", env).start()
    answers: list[int] = []

    def turn(session_id: str) -> None:
        with api.client(timeout=GIVE_UP) as client:
            try:
                answers.append(
                    client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"}).status_code
                )
            except httpx.HTTPError:
                answers.append(0)  # the connection closed under it

    try:
        with api.client() as client:
            sessions = [client.post("/v1/sessions").json()["id"] for _ in range(3)]
        threads = [threading.Thread(target=turn, args=(s,)) for s in sessions]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(chat.requests) == 3, what="three turns at the model")
        deps.fault(fault)
        code, _ = stop_time(api)
        assert code in (0, EXIT_FORCED)
        for thread in threads:
            thread.join(GIVE_UP)
        assert len(answers) == 3
    finally:
        api.proc.kill()
        chat.stop()


@pytest.fixture
def stalling_pubsub() -> Iterator[PubSubServer]:
    server = PubSubServer().start()
    yield server
    server.stop()


def test_a_pubsub_endpoint_that_never_answers_holds_neither_process(
    stalling_pubsub: PubSubServer, redis_server: RedisServer
) -> None:
    """Calls into the client library run in threads that nothing can cancel, and the
    interpreter waits for them at exit: before, a publish left hanging kept the api alive for
    the library's own retry deadline. The watchdog ends both processes at the deadline."""
    broker = PubSubBroker(stalling_pubsub)
    env = app_env(
        redis_server.url,
        broker.env["AGENT_QUEUE_URL"],
        **broker.env,
        AGENT_SHUTDOWN_GRACE_SECONDS=str(GRACE),
        AGENT_QUEUE_FAILOVER_WAIT_SECONDS="30",
    )
    api = AppProcess("api", env).start()
    worker = AppProcess("worker", env).start()
    results: list[int] = []
    try:
        tasks = start_long_tasks(api, 1)
        wait_until(lambda: statuses(api, tasks) == ["running"], what="the task running")
        with api.client() as client:
            session_id = client.post("/v1/sessions").json()["id"]
        stalling_pubsub.stall()

        def publish() -> None:
            with api.client(timeout=GIVE_UP) as client:
                try:
                    url = f"/v1/sessions/{session_id}/tasks"
                    results.append(client.post(url, json={"input": "x"}).status_code)
                except httpx.HTTPError:
                    results.append(0)

        thread = threading.Thread(target=publish)
        thread.start()
        wait_until(lambda: stalling_pubsub.held["publish"] >= 1, what="the publish held by the endpoint")
        codes = [stop_time(worker)[0], stop_time(api)[0]]
        assert all(code in (0, EXIT_FORCED) for code in codes), codes
        thread.join(GIVE_UP)
    finally:
        stalling_pubsub.flow()
        worker.proc.kill()
        api.proc.kill()


# A container's first process is the app: the kernel ignores a default-action signal sent to a
# PID namespace's init, so the backstop must not be one.
AS_PID_1 = ["unshare", "--fork", "--pid", "--kill-child"]


@pytest.mark.parametrize("pid_1", [False, True], ids=["process", "pid-1"])
def test_a_process_whose_watchdog_cannot_run_is_ended_at_the_deadline(pid_1: bool) -> None:
    """The watchdog is a Python thread: C code holding the interpreter's lock (here a regular
    expression that would backtrack for hours) keeps it from running. faulthandler's C thread
    ends the process ``BACKSTOP_SECONDS`` after the deadline all the same, saying where it hung."""
    if pid_1 and (os.geteuid() != 0 or shutil.which("unshare") is None):
        pytest.skip("a PID namespace needs root and unshare")
    code = (
        "import os, re\n"
        "from agent_app.process import ShutdownClock\n"
        f"ShutdownClock({GRACE}).start()\n"
        "print('deadline set as pid', os.getpid(), flush=True)\n"
        "re.match(r'(a+)+$', 'a' * 40 + 'b')\n"
    )
    argv = [*(AS_PID_1 if pid_1 else []), sys.executable, "-c", code]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        assert first.startswith("deadline set as pid") and (first.split()[-1] == "1") == pid_1, first
        started = time.monotonic()
        try:
            exit_code = proc.wait(GIVE_UP)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"still running {GIVE_UP} s after its deadline was set") from None
        took = time.monotonic() - started
        out, err = proc.stdout.read(), proc.stderr.read()
    assert exit_code == EXIT_FORCED, (exit_code, out, err)
    assert "grace period over" not in out  # the watchdog never ran
    assert "most recent call first" in err and "in match" in err, err  # where it hung
    assert took <= GRACE + BACKSTOP_SECONDS + OBSERVED, took
