"""Three sites of one fleet on loopback, each its own Redis, NATS stream, api (and worker) behind
a TLS load balancer (HAProxy, certificates from a CA the processes trust): requests reach a
session's home from any site, a lost home is taken over by its successor, and a home that comes
back is fenced by the newer epoch."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agent_app.client import FleetClient
from agent_app.contract import (
    FLEET_KEY_HEADER,
    FLEET_PATH_PREFIX,
    FORWARDED_HEADER,
    SITE_HEADER,
    VIA_HEADER,
    fleet_sites_value,
)
from agent_app.fleet.peers import KEEPALIVE_EXPIRY_SECONDS
from agent_app.schemas import MAX_BODY_BYTES, Message
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.testing.servers import (
    API_KEY,
    AppProcess,
    NatsServer,
    Proc,
    RedisServer,
    app_env,
    free_port,
    serve,
    wait_until,
)
from tests.support.brokers import NatsBroker

NAMES = ("site-a", "site-b", "site-c")
FLEET_KEY = "fleet-key-for-tests-0123456789abcdef"
OTHER_KEY = "other-client-key-0123456789abcdef"


@dataclass
class Site:
    name: str
    port: int  # the TLS load balancer
    redis: RedisServer
    env: dict[str, str]
    pem: Path
    api: AppProcess | None = None
    worker: AppProcess | None = None
    lb: Proc | None = None
    extra: list[AppProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, *, worker: bool = True) -> Site:
        self.api = AppProcess("api", self.env).start()
        if worker:
            self.worker = AppProcess("worker", self.env).start(ready=False)
        self.start_lb()
        return self

    def start_lb(self, backend: int | None = None, *, refuse: str = "", rules: str = "") -> None:
        """The site's TLS load balancer, in front of its api (or of the server at ``backend``);
        requests whose path begins with ``refuse`` are answered 503 by the balancer itself;
        ``rules``: more ``http-request`` lines for its frontend."""
        assert self.api is not None
        backend = backend or self.api.port
        cfg = self.pem.with_suffix(".cfg")
        refusal = f"  http-request return status 503 if {{ path_beg {refuse} }}\n" if refuse else ""
        cfg.write_text(
            "global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n"
            f"  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:{self.port} ssl crt {self.pem}\n"
            f"{refusal}{rules}  default_backend be\nbackend be\n  server api 127.0.0.1:{backend}\n"
        )
        self.lb, _ = serve(
            lambda port: Proc(f"lb-{self.name}", ["haproxy", "-db", "-f", str(cfg)]),
            self.port,
            fixed=True,
            what=f"{self.name} load balancer",
        )

    def stop_lb(self) -> None:
        """The site is out of reach: its processes run, its load balancer is gone."""
        assert self.lb is not None
        self.lb.stop()

    def stop(self) -> None:
        for proc in (self.lb, self.api, self.worker):
            if proc is not None:
                proc.stop()
        self.lb = self.api = self.worker = None

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def record(self, kind: str, record_id: str) -> dict[str, str]:
        return self.store().hgetall(f"skyfleet:{kind}:{{{record_id}}}")  # type: ignore[return-value]


@pytest.fixture
def fleet(tmp_path: Path, nats_server: NatsServer) -> Iterator[dict[str, Site]]:
    ca = CertificateAuthority("fleet test roots")
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(ca.pem)
    ports = {name: free_port() for name in NAMES}
    sites_value = fleet_sites_value([(n, f"https://127.0.0.1:{ports[n]}") for n in NAMES])
    sites: dict[str, Site] = {}
    try:
        for name in NAMES:
            store = RedisServer().start()
            pem = tmp_path / f"{name}.pem"
            pem.write_bytes(ca.issue(["127.0.0.1"]).bundle)
            env = app_env(
                store.url,
                NatsBroker(nats_server).env["AGENT_QUEUE_URL"],
                AGENT_SITE=name,
                AGENT_FLEET_SITES=sites_value,
                AGENT_FLEET_KEY=FLEET_KEY,
                AGENT_API_KEYS=f"{API_KEY},{OTHER_KEY}",
                SSL_CERT_FILE=str(bundle),
            )
            sites[name] = Site(name=name, port=ports[name], redis=store, env=env, pem=pem)
        for site in sites.values():
            site.start()
        yield sites
    finally:
        for site in sites.values():
            site.stop()
            site.redis.stop()


def client(site: Site):
    assert site.api is not None
    return site.api.client()


def task_waiting_at(site: Site) -> tuple[str, str]:
    """A session and a task accepted at ``site`` with its worker stopped: (session id, task id)."""
    assert site.worker is not None
    site.worker.stop()
    with client(site) as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
        accepted = c.post(f"/v1/sessions/{sid}/tasks", json={"input": "summarise"})
        assert accepted.status_code == 202, accepted.text
    return sid, accepted.json()["task_id"]


def test_a_session_is_served_by_its_home_from_every_site_and_held_by_a_majority(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()
    with client(a) as ca, client(b) as cb, client(c) as cc:
        created = ca.post("/v1/sessions", json={})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        reply = cc.post(f"/v1/sessions/{sid}/messages", json={"content": "hello from c"})
        assert reply.status_code == 200, reply.text
        assert reply.headers[SITE_HEADER] == "site-a"  # served by the home, stamps kept
        got = cb.get(f"/v1/sessions/{sid}")
        assert got.status_code == 200 and got.headers[SITE_HEADER] == "site-a"
        assert got.json()["messages"][0]["content"] == "hello from c"
    # Acknowledged only once a majority held it: site-a and at least one other have the turn.
    held = [s.record("session", sid) for s in (a, b, c)]
    assert held[0]["version"] == "1" and held[0]["home"] == "site-a"
    assert any(r.get("version") == "1" and r.get("wid") == held[0]["wid"] for r in held[1:]), held


def test_a_lost_home_is_taken_over_by_its_successor_and_fenced_when_it_returns(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        assert ca.post(f"/v1/sessions/{sid}/messages", json={"content": "turn 1"}).status_code == 200
    a.stop()  # the home is lost: its processes and its load balancer
    with client(c) as cc:
        # site-c is not site-a's successor: it passes the request to site-b, which takes over.
        reply = cc.post(f"/v1/sessions/{sid}/messages", json={"content": "turn 2"})
        assert reply.status_code == 200, reply.text
        assert reply.headers[SITE_HEADER] == "site-b"
    assert b.record("session", sid)["home"] == "site-b" and b.record("session", sid)["epoch"] == "2"
    a.start(worker=False)  # it comes back with its old copy (home site-a, epoch 1)
    assert a.record("session", sid)["home"] == "site-a"
    with client(a) as ca:
        # Its own copy says it is home: the turn runs, its copy is refused by the newer epoch,
        # site-a adopts the newer record and passes the request to the new home.
        reply = ca.post(f"/v1/sessions/{sid}/messages", json={"content": "turn 3"})
        assert reply.status_code == 200, reply.text
        assert reply.headers[SITE_HEADER] == "site-b"
        history = [
            m["content"] for m in ca.get(f"/v1/sessions/{sid}").json()["messages"] if m["role"] == "user"
        ]
    assert history == ["turn 1", "turn 2", "turn 3"]  # nothing lost, nothing overwritten
    assert a.record("session", sid)["home"] == "site-b"


def test_a_turn_whose_home_balancer_answered_502_is_not_run_again_elsewhere(fleet: dict[str, Site]) -> None:
    """A load balancer's 502 means a backend took the request and broke: it may have run there.
    The entry site answers 504 for the caller to send again (with its key); it neither runs the
    turn itself nor takes the session from its home."""
    a, b, c = fleet.values()
    with client(b) as cb, client(a) as ca:
        sid = cb.post("/v1/sessions", json={}).json()["id"]
        assert ca.get(f"/v1/sessions/{sid}").headers[SITE_HEADER] == "site-b"  # a keeps a copy
    before = a.record("session", sid)
    received: list[bytes] = []
    broken = socket.socket()
    broken.bind(("127.0.0.1", 0))
    broken.listen()

    def take_and_hang_up() -> None:
        while True:
            try:
                conn, _ = broken.accept()
            except OSError:
                return
            with conn:
                received.append(conn.recv(65536).split(b" HTTP/")[0])

    threading.Thread(target=take_and_hang_up, daemon=True).start()
    assert b.lb is not None
    b.lb.stop()
    b.start_lb(backend=broken.getsockname()[1])
    try:
        with client(a) as ca:
            reply = ca.post(f"/v1/sessions/{sid}/messages", json={"content": "at most once"})
        assert reply.status_code == 504 and reply.json()["code"] == "gateway_timeout", reply.text
        assert received == [f"POST /v1/sessions/{sid}/messages".encode()]
        for site in (a, c):
            held = site.record("session", sid)
            assert not held or (held["home"], held["epoch"]) == ("site-b", before["epoch"]), held
    finally:
        broken.close()


def test_a_keyed_turn_sent_again_after_its_task_could_not_be_queued_starts_one_task(
    fleet: dict[str, Site], nats_server: NatsServer
) -> None:
    """The turn's task is stored (and copied to the fleet) before it is queued; when queueing
    fails the turn answers 503 and the client sends it again with its key. The task is named
    by the turn, so the second run names the first run's task instead of starting another."""
    a, b, c = fleet.values()
    key = {"Idempotency-Key": "turn-with-a-task"}
    ask = {"content": "background: summarise"}
    assert nats_server.proc is not None
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        os.kill(nats_server.proc.pid, signal.SIGSTOP)  # the broker stops answering
        try:
            failed = ca.post(f"/v1/sessions/{sid}/messages", json=ask, headers=key)
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)
        assert failed.status_code == 503, failed.text
        reply = ca.post(f"/v1/sessions/{sid}/messages", json=ask, headers=key)
        assert reply.status_code == 200, reply.text
        task_id = reply.json()["task_id"]
    started = {
        name.split("{")[1].rstrip("}")
        for site in (a, b, c)
        for name in site.store().scan_iter("skyfleet:task:*")
        if site.store().hget(name, "session_id") == sid
    }
    assert started == {task_id}


def test_a_task_that_could_not_be_queued_is_failed_at_every_site_that_holds_it(
    fleet: dict[str, Site], nats_server: NatsServer
) -> None:
    """Its create was copied to the fleet before the queue refused it and the client got a 503:
    no site may keep it queued (a takeover would run a task its client was told failed)."""
    a, b, c = fleet.values()
    assert nats_server.proc is not None
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        os.kill(nats_server.proc.pid, signal.SIGSTOP)  # the broker stops answering
        try:
            refused = ca.post(f"/v1/sessions/{sid}/tasks", json={"input": "summarise"})
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)
        assert refused.status_code == 503, refused.text
    held = [
        site.store().hgetall(name)
        for site in (a, b, c)
        for name in site.store().scan_iter("skyfleet:task:*")
        if site.store().hget(name, "session_id") == sid
    ]
    assert len(held) >= 2, held  # the home and a majority's copy
    assert {r["status"] for r in held} == {"failed"}, held
    assert len({(r["id"], r["version"], r["wid"]) for r in held}) == 1, held


def test_a_read_confirmed_at_a_site_that_lacks_the_write_gives_it_the_whole_record(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        assert ca.post(f"/v1/sessions/{sid}/messages", json={"content": "kept whole"}).status_code == 200
        assert c.record("session", sid) == {}  # held by site-a and its successor only
        b.stop_lb()
        # The read is confirmed at site-c instead: it is sent the write's name, lacks it, and
        # gets the whole record (never a record cut down to the name).
        got = ca.get(f"/v1/sessions/{sid}")
        assert got.status_code == 200, got.text
    assert c.record("session", sid) == a.record("session", sid)


def test_a_home_without_a_majority_acknowledges_nothing(fleet: dict[str, Site]) -> None:
    a, b, c = fleet.values()
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        b.stop_lb()
        c.stop_lb()
        reply = ca.post(f"/v1/sessions/{sid}/messages", json={"content": "alone"})
        assert reply.status_code == 503 and reply.json()["code"] == "fleet_unavailable", reply.text
        assert ca.get(f"/v1/sessions/{sid}").status_code == 503  # nor confirms a read
        assert ca.post("/v1/sessions", json={}).status_code == 503


def test_a_task_accepted_at_a_lost_site_is_completed_by_its_successor_once(fleet: dict[str, Site]) -> None:
    a, b, c = fleet.values()
    sid, task_id = task_waiting_at(a)  # the task waits in site-a's queue, unrun
    # Accepted once a majority held its record: one of the other sites has it, queued.
    assert "queued" in (b.record("task", task_id).get("status"), c.record("task", task_id).get("status"))
    a.stop()
    with client(b) as cb:

        def done() -> bool:
            r = cb.get(f"/v1/tasks/{task_id}")
            assert r.status_code == 200, r.text
            return r.json()["status"] == "succeeded"

        wait_until(done, timeout=30, what="the task to finish at site-b")
        task = cb.get(f"/v1/tasks/{task_id}").json()
        session = cb.get(f"/v1/sessions/{sid}").json()
    assert task["attempts"] == 1, b.worker.output()[-3000:] if b.worker else ""
    reports = [m for m in session["messages"] if m.get("task_id") == task_id]
    assert len(reports) == 1, session["messages"]
    assert b.record("task", task_id)["home"] == "site-b" and "requeue" not in b.record("task", task_id)


def test_a_session_and_its_task_stay_their_keys_at_every_site_and_after_a_takeover(
    fleet: dict[str, Site],
) -> None:
    """Another client key is answered wherever it asks as for an id nobody has: 404 from the
    site it asked, never passed to the record's home (which would name it) nor taking anything
    over, before and after the home is lost. The owning key travels with copies and takeovers."""
    a, b, c = fleet.values()
    sid, task_id = task_waiting_at(a)
    with client(a) as ca:
        assert ca.post(f"/v1/sessions/{sid}/messages", json={"content": "my name is Ada"}).status_code == 200
    nobody = "0" * 32

    def requests(session: str, task: str) -> list[tuple[str, str, Any]]:
        return [
            ("GET", f"/v1/sessions/{session}", None),
            ("POST", f"/v1/sessions/{session}/messages", {"content": "what is my name?"}),
            ("POST", f"/v1/sessions/{session}/tasks", {"input": "x"}),
            ("GET", f"/v1/tasks/{task}", None),
        ]

    def answer(r: httpx.Response) -> tuple[int, str, str | None, str | None]:
        return r.status_code, r.json()["code"], r.headers.get(SITE_HEADER), r.headers.get(VIA_HEADER)

    def refused_everywhere(sites: tuple[Site, ...]) -> None:
        for site in sites:
            assert site.api is not None
            with site.api.client(headers={"Authorization": f"Bearer {OTHER_KEY}"}) as stranger:
                for known, unknown in zip(requests(sid, task_id), requests(nobody, nobody), strict=True):
                    got = answer(stranger.request(known[0], known[1], json=known[2]))
                    assert got == answer(stranger.request(unknown[0], unknown[1], json=unknown[2])), known
                    assert got == (404, "not_found", site.name, None), (known, got)

    refused_everywhere((a, b, c))
    a.stop()
    refused_everywhere((b, c))
    assert b.record("session", sid)["home"] == "site-a"  # the other key took nothing over
    with client(c) as cc:
        # The owner's turn: site-c passes it to site-b, site-a's successor, which takes over.
        recall = cc.post(f"/v1/sessions/{sid}/messages", json={"content": "what is my name?"})
        assert recall.status_code == 200 and recall.json()["reply"]["content"] == "Your name is Ada."
        assert b.record("session", sid)["home"] == "site-b"
        refused_everywhere((b, c))
        wait_until(
            lambda: cc.get(f"/v1/tasks/{task_id}").json()["status"] == "succeeded",
            timeout=30,
            what="the owner's task to finish at site-b",
        )
        users = [
            m["content"] for m in cc.get(f"/v1/sessions/{sid}").json()["messages"] if m["role"] == "user"
        ]
    assert users == ["my name is Ada", "what is my name?"]  # the other key's turns reached nothing


def test_a_lost_sites_task_nobody_asks_about_is_adopted_and_completed_by_its_successor(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()
    sid, task_id = task_waiting_at(a)
    # The successor lists the unfinished copy under its home.
    assert b.store().sismember("skyfleet:fleet:tasks-from:site-a", task_id)
    a.stop()
    # No client asks for the task: site-b's own look at site-a's list takes it over and runs it.
    wait_until(
        lambda: b.record("task", task_id).get("status") == "succeeded",
        timeout=40,
        what="site-b to adopt and finish site-a's task",
    )
    record = b.record("task", task_id)
    assert record["home"] == "site-b" and record["attempts"] == "1", record
    assert not b.store().sismember("skyfleet:fleet:tasks-from:site-a", task_id)
    with client(b) as cb:
        session = cb.get(f"/v1/sessions/{sid}").json()
    assert len([m for m in session["messages"] if m.get("task_id") == task_id]) == 1, session["messages"]
    # site-c is not site-a's successor: it adopts nothing.
    assert c.record("task", task_id).get("home") in ("site-a", "site-b")


def test_a_site_cut_off_from_its_fleet_runs_no_task_until_a_majority_holds_its_claim(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()
    _, task_id = task_waiting_at(a)
    b.stop_lb()
    c.stop_lb()
    a.worker = AppProcess("worker", a.env).start(ready=False)
    worker = a.worker
    # The worker claims the task in its own store, but no other site holds the claim: it waits.
    wait_until(
        lambda: "too few of the fleet's sites hold the task" in worker.output(),
        timeout=30,
        what="site-a's worker to find its claim unheld",
    )

    # Given back each time, uncounted (a next try may be under way: wait for it to end).
    def given_back() -> bool:
        record = a.record("task", task_id)
        return (record["status"], record["attempts"]) == ("queued", "0")

    wait_until(
        given_back,
        timeout=10,
        what="the unheld claim to be given back",
    )
    assert "task succeeded" not in worker.output()
    b.start_lb()
    wait_until(
        lambda: a.record("task", task_id).get("status") == "succeeded",
        timeout=40,
        what="the task to run once a majority holds its claim",
    )
    assert a.record("task", task_id)["attempts"] == "1"


def test_a_result_too_few_sites_took_is_acknowledged_only_once_a_majority_holds_it(
    fleet: dict[str, Site],
) -> None:
    """The task's claim reached the others, then only its result did not: the message is held,
    not acknowledged, until they take it. Acknowledged at once, the others would keep a running
    task whose home holds the only result, and a successor taking it over would run it again."""
    a, b, c = fleet.values()
    assert a.worker is not None
    worker = a.worker
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        # Long enough to swap two balancers on a loaded machine before the run ends.
        accepted = ca.post(f"/v1/sessions/{sid}/tasks", json={"input": "what is 6*8", "work_seconds": 10})
        assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    wait_until(
        lambda: any(s.record("task", task_id).get("status") == "running" for s in (b, c)),
        what="the claim to be held by a majority",
    )
    for site in (b, c):  # from now on they take no task copy (sessions still pass)
        site.stop_lb()
        site.start_lb(refuse=f"{FLEET_PATH_PREFIX}/tasks/")
    assert a.record("task", task_id)["status"] == "running", "the run ended before the cut: nothing is shown"
    wait_until(
        lambda: "settled task not copied to the fleet" in worker.output(),
        timeout=30,
        what="site-a's worker to store a result no other site took",
    )
    assert a.record("task", task_id)["status"] == "succeeded"
    assert worker.metric("agent_tasks_total", outcome="succeeded") == 0  # held, not acknowledged
    # The site that took the claim (a majority is two: site-a and one other) still says running.
    assert {s.record("task", task_id).get("status") for s in (b, c)} - {None} == {"running"}
    b.stop_lb()
    b.start_lb()
    wait_until(
        lambda: b.record("task", task_id).get("status") == "succeeded",
        timeout=30,
        what="the result to reach site-b",
    )
    assert b.record("task", task_id)["result"] == "6*8 = 48"
    wait_until(
        lambda: worker.metric("agent_tasks_total", outcome="succeeded") == 1,
        what="the message to be acknowledged once a majority holds the result",
    )
    assert a.record("task", task_id)["attempts"] == "1"


def test_a_site_that_cannot_ask_enough_sites_never_answers_that_a_session_does_not_exist(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
    assert c.record("session", sid) == {}  # held by site-a and its successor only
    a.stop_lb()
    b.stop_lb()
    with client(c) as cc:
        # Neither site that holds it answers: "no such session" would be a lie.
        reply = cc.get(f"/v1/sessions/{sid}")
        assert reply.status_code == 503 and reply.json()["code"] == "fleet_unavailable", reply.text
        # One site's "not here" besides its own is enough to tell an unknown id (no majority
        # can hold it).
        b.start_lb()
        unknown = "0" * 32
        wait_until(lambda: cc.get(f"/v1/sessions/{unknown}").status_code == 404, timeout=15, what="a 404")


def test_a_session_larger_than_a_client_request_is_still_copied(fleet: dict[str, Site]) -> None:
    """Every write copies the whole session to the other sites: past the 64 KiB a client may
    send, the copy still lands (a request with the fleet key may carry more), so the session
    keeps its writes and reads."""
    a, _, c = fleet.values()
    with client(a) as ca, client(c) as cc:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        for i in range(12):
            r = ca.post(f"/v1/sessions/{sid}/messages", json={"content": f"{i} " + "x" * 3990})
            assert r.status_code == 200, (i, r.text)
        held = a.record("session", sid)
        assert sum(len(v) for v in held.values()) > MAX_BODY_BYTES
        got = cc.get(f"/v1/sessions/{sid}")
        assert got.status_code == 200, got.text
        assert len(got.json()["messages"]) == 24
    # A client still may not send that much.
    with client(a) as ca:
        big = ca.post(f"/v1/sessions/{sid}/messages", content=b"{" + b" " * MAX_BODY_BYTES + b"}")
        assert big.status_code == 413, big.text


def test_the_fleet_api_refuses_without_the_fleet_key(fleet: dict[str, Site]) -> None:
    a = fleet["site-a"]
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        # a client key is worth nothing here, nor a wrong fleet key
        for headers in ({}, {FLEET_KEY_HEADER: "x" * 40}):
            assert ca.get(f"/internal/v1/fleet/sessions/{sid}", headers=headers).status_code == 401
            r = ca.put(
                f"/internal/v1/fleet/sessions/{sid}",
                json={"record": {"home": "site-c", "epoch": "9", "version": "0"}},
                headers={FORWARDED_HEADER: "site-c", **headers},
            )
            assert r.status_code == 401
            # nor does a body it would refuse teach a caller without the key what it accepts
            bad = ca.put(f"/internal/v1/fleet/sessions/{sid}", json={"record": {}}, headers=headers)
            assert bad.status_code == 401, bad.text
        # the right key reads the copy
        got = ca.get(f"/internal/v1/fleet/sessions/{sid}", headers={FLEET_KEY_HEADER: FLEET_KEY})
        assert got.status_code == 200 and got.json()["record"]["home"] == "site-a"
    assert a.record("session", sid)["home"] == "site-a" and a.record("session", sid)["epoch"] == "1"


def test_a_client_posing_as_a_site_cannot_move_a_session(fleet: dict[str, Site]) -> None:
    a, b, _ = fleet.values()
    with client(a) as ca, client(b) as cb:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        # At the home's successor, with the header sites pass requests on with: still a client.
        reply = cb.post(
            f"/v1/sessions/{sid}/messages",
            json={"content": "hi"},
            headers={FORWARDED_HEADER: "site-c,site-a", FLEET_KEY_HEADER: "guess" * 8},
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers[SITE_HEADER] == "site-a"
    assert b.record("session", sid)["home"] == "site-a" and b.record("session", sid)["epoch"] == "1"


def test_a_turn_no_majority_held_is_not_replayed_until_one_holds_it(fleet: dict[str, Site]) -> None:
    a, b, c = fleet.values()
    key = {"Idempotency-Key": "turn-once-0001"}
    with client(a) as ca:
        sid = ca.post("/v1/sessions", json={}).json()["id"]
        b.stop_lb()
        c.stop_lb()
        refused = ca.post(f"/v1/sessions/{sid}/messages", json={"content": "once"}, headers=key)
        assert refused.status_code == 503, refused.text
        # The retry is not answered from the copy only site-a holds.
        again = ca.post(f"/v1/sessions/{sid}/messages", json={"content": "once"}, headers=key)
        assert again.status_code == 503, again.text
        for site in (b, c):
            site.start_lb()
        # The client retries as told (Retry-After) until the others are back in sight.
        retried = wait_until(
            lambda: (
                (
                    r := ca.post(f"/v1/sessions/{sid}/messages", json={"content": "once"}, headers=key)
                ).status_code
                == 200
                and r
            ),
            timeout=20,
            what="the retried turn to be held by a majority",
        )
        assert retried.json()["reply"]["content"]
        history = [
            m["content"] for m in ca.get(f"/v1/sessions/{sid}").json()["messages"] if m["role"] == "user"
        ]
    assert history == ["once"]  # stored once, and a majority holds it now
    assert [s.record("session", sid).get("version") for s in (b, c)].count("1") >= 1


# The balancer holds a session's whole record, copied out, past the sites' CALL_SECONDS (2 s)
# and then refuses it (a tarpit): the copying site gives up on it. A write's name (a confirm's,
# which is small) passes.
SLOW_COPIES = (
    "  timeout tarpit 3s\n"
    "  http-request tarpit if METH_PUT { path_beg /internal/v1/fleet/sessions/ } "
    "{ req.hdr_val(content-length) gt 400 }\n"
)


@pytest.mark.parametrize("carries", [True, False], ids=["later write carries the turn", "it does not"])
def test_a_turn_whose_copy_a_later_write_of_its_home_overtook_is_held(
    fleet: dict[str, Site], carries: bool
) -> None:
    """A task's report takes no turn lock: written at the home after a turn, its copy can reach
    the third site first while the turn's copy waits on the successor. The third site then
    answers the turn's copy with the later record, which carries the turn: the turn is held by
    a majority and answered, not refused with 503 (as it was, in a partition drill). A later
    record without the turn (one the home's store lost, written over) still refuses it."""
    a, b, c = fleet.values()
    assert b.lb is not None
    b.lb.stop()
    b.start_lb(rules=SLOW_COPIES)  # site-b, site-a's successor, now gives up on whole records
    # site-a's kept connections to the old balancer expire unused: its next call to site-b (the
    # turn's confirm, a name only, which site-b holds) opens a new one and passes.
    time.sleep(KEEPALIVE_EXPIRY_SECONDS + 0.5)
    with client(a) as ca:
        # The later write must reach site-c before the turn's copy, which site-a sends there once
        # site-b has failed it (2 s): a run whose test thread was held up that long (a loaded
        # machine) did not set the scene, and is set again with a new session.
        for _ in range(3):
            outcome = _overtaken_turn(a, c, ca, carries)
            if outcome is not None:
                break
        else:
            raise AssertionError("the turn's copy reached site-c before the later write, three times")
    replies, held = outcome
    assert [r["version"] for r in held] == ["2", "2"]  # the later record, at the home too
    assert replies, "the turn was not answered"
    if not carries:
        assert replies[0].status_code == 503 and replies[0].json()["code"] == "fleet_unavailable"
        assert "first" not in held[1]["messages"]
        return
    assert replies[0].status_code == 200, replies[0].text
    assert replies[0].json()["reply"]["content"]
    assert "first" in held[1]["messages"]


def _overtaken_turn(
    a: Site, c: Site, ca: httpx.Client, carries: bool
) -> tuple[list[httpx.Response], list[dict[str, str]]] | None:
    """A turn at site-a whose copy waits on site-b while a later write of the session is stored
    at site-a and copied to site-c; the turn's replies and the records site-a and site-c hold.
    None when the turn's copy reached site-c first."""
    sid = ca.post("/v1/sessions", json={}).json()["id"]
    before = a.record("session", sid)
    replies: list[httpx.Response] = []
    turn = threading.Thread(
        target=lambda: replies.append(ca.post(f"/v1/sessions/{sid}/messages", json={"content": "first"}))
    )
    turn.start()
    try:
        # The turn is stored at site-a, its copy waiting on site-b: the report is written after
        # it there, and its copy reaches site-c first.
        stored = wait_until(
            lambda: (r := a.record("session", sid)).get("version") == "1" and r,
            interval=0.01,
            what="the turn stored at site-a",
        )
        messages = json.loads((stored if carries else before)["messages"])
        report = Message(
            role="assistant", content="Background task finished", at=time.time(), task_id="t" * 32
        )
        messages.append(report.model_dump(mode="json", exclude_defaults=True))
        later = {**stored, "version": "2", "messages": json.dumps(messages), "wid": "report-write-0001"}
        a.store().hset(
            f"skyfleet:session:{{{sid}}}", mapping={k: later[k] for k in ("version", "messages", "wid")}
        )
        if c.record("session", sid).get("version") not in (None, "0"):
            return None  # too late: the turn's copy is there already
        with httpx.Client(verify=str(a.pem.parent / "roots.pem")) as http:
            copied = http.put(
                f"{c.url}{FLEET_PATH_PREFIX}/sessions/{sid}",
                json={"record": later},
                headers={FLEET_KEY_HEADER: FLEET_KEY, FORWARDED_HEADER: "site-a"},
            )
        assert copied.status_code == 200, copied.text
    finally:
        turn.join(30)
    return replies, [s.record("session", sid) for s in (a, c)]


# --- the fleet client (agent_app.client) ---------------------------------------------------------


def fleet_client(global_site: Site, **kwargs: Any) -> FleetClient:
    """A FleetClient whose global name is ``global_site``'s, trusting the fleet's test roots."""
    return FleetClient(global_site.url, API_KEY, http=https_to(global_site), **kwargs)


def https_to(site: Site) -> Callable[[str], httpx.AsyncClient]:
    """HTTP clients trusting the fleet's test roots."""
    roots = ssl.create_default_context(cafile=site.pem.parent / "roots.pem")
    return lambda base: httpx.AsyncClient(base_url=base, verify=roots)


def test_every_site_lists_the_fleet_to_its_clients(fleet: dict[str, Site]) -> None:
    a, b, _ = fleet.values()
    with client(b) as cb:
        got = cb.get("/v1/fleet")
        assert cb.get("/v1/fleet", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert got.status_code == 200, got.text
    assert got.json() == {"site": "site-b", "sites": [{"name": s.name, "url": s.url} for s in fleet.values()]}

    async def discover() -> tuple[str, ...]:
        async with fleet_client(a) as fc:
            return await fc.discover()

    assert asyncio.run(discover()) == tuple(s.url for s in fleet.values() if s is not a)


def test_the_fleet_client_carries_on_at_another_site_when_its_global_names_site_is_lost(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()

    async def scenario() -> None:
        async with fleet_client(a, sites=[b.url, c.url]) as fc:
            session = await fc.create_session()
            first = await fc.send_message(session["id"], "hello")
            assert first["reply"]
            a.stop_lb()  # the global name's site is out of reach
            async with https_to(a)(a.url) as plain:
                with pytest.raises(httpx.ConnectError):
                    await plain.get("/healthz")  # a client of the global name alone fails
            turn = await fc.request(
                "POST",
                f"/v1/sessions/{session['id']}/messages",
                json={"content": "still there?"},
                headers={"Idempotency-Key": "turn-2"},
            )
            assert turn.status_code == 200, turn.text
            assert turn.headers[SITE_HEADER] in ("site-b", "site-c")  # the successor took it over
            assert turn.request.url.host == "127.0.0.1" and turn.request.url.port == b.port
            # The lost endpoint waits out its cooldown last in line: no second connect to it.
            assert fc.endpoints[-1] == a.url
            created = await fc.request("POST", "/v1/sessions", json={})
            assert created.status_code == 201 and created.request.url.port == b.port
            got = await fc.request("GET", f"/v1/sessions/{session['id']}")
            assert [m["content"] for m in got.json()["messages"] if m["role"] == "user"] == [
                "hello",
                "still there?",
            ]

    asyncio.run(scenario())


def test_the_fleet_client_passes_over_a_balancer_without_backends_but_not_the_apps_answers(
    fleet: dict[str, Site],
) -> None:
    a, b, c = fleet.values()

    async def scenario() -> None:
        async with fleet_client(a, sites=[b.url, c.url]) as fc:
            missing = await fc.request("GET", "/v1/tasks/" + "0" * 32)
            assert missing.status_code == 404 and missing.headers[SITE_HEADER] == "site-a"  # the app's answer
            assert a.api is not None
            a.api.stop()  # site-a's balancer runs with no backend: it answers 503 by itself
            key = {"Idempotency-Key": "past-a-balancer-without-backends"}
            created = await fc.request("POST", "/v1/sessions", json={}, headers=key)
            assert created.status_code == 201, created.text
            assert created.headers[SITE_HEADER] == "site-b"
        async with fleet_client(a, sites=[b.url, c.url]) as fc:
            # Without a key, a balancer's 503 is the caller's to judge (an Envoy-based balancer
            # also sends it when a backend reset after taking the request).
            unkeyed = await fc.request("POST", "/v1/sessions", json={})
            assert unkeyed.status_code == 503 and SITE_HEADER not in unkeyed.headers
            assert fc.endpoints[-1] == a.url  # tried last from now on

    asyncio.run(scenario())


def test_the_fleet_client_sends_again_only_what_is_safe_to_repeat(fleet: dict[str, Site]) -> None:
    """A site that takes the request and breaks the connection unanswered may have acted on it:
    a create without a key is not sent again (the caller decides); a GET and a keyed create are,
    at the next site."""
    b = fleet["site-b"]
    received: list[bytes] = []

    async def scenario() -> None:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            received.append(head.split(b" HTTP/")[0])
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # No cooldown: the hanging endpoint stays first in line for every request.
        fc = FleetClient(f"http://127.0.0.1:{port}", API_KEY, sites=[b.url], http=https_to(b), cooldown=0)
        async with server, fc:
            with pytest.raises(httpx.RemoteProtocolError):
                await fc.request("POST", "/v1/sessions", json={})
            health = await fc.request("GET", "/healthz")
            assert health.status_code == 200 and health.headers[SITE_HEADER] == "site-b"
            keyed = await fc.request("POST", "/v1/sessions", json={}, headers={"Idempotency-Key": "s-1"})
            assert keyed.status_code == 201 and keyed.headers[SITE_HEADER] == "site-b"
        assert received == [b"POST /v1/sessions", b"GET /healthz", b"POST /v1/sessions"]

    asyncio.run(scenario())


def test_a_keyed_create_sent_again_after_its_site_was_lost_answers_the_session_it_made(
    fleet: dict[str, Site],
) -> None:
    """The create reached site-a and its successor site-b (a majority); the retry lands at
    site-c, which has no copy: it must not make a second session under the same id."""
    a, b, c = fleet.values()

    async def scenario() -> None:
        async with fleet_client(a, sites=[c.url, b.url]) as fc:
            made = await fc.create_session({"user": "ada"}, idempotency_key="create-once")
            assert b.record("session", made["id"])["home"] == "site-a"
            assert c.record("session", made["id"]) == {}
            a.stop_lb()  # its answer was lost with the site, say: the client sends it again
            key = {"Idempotency-Key": "create-once"}
            again = await fc.request("POST", "/v1/sessions", json={"metadata": {"user": "ada"}}, headers=key)
            assert again.status_code == 201, again.text
            assert again.json()["id"] == made["id"]
            assert (
                again.request.url.port == c.port and again.headers[SITE_HEADER] == "site-b"
            )  # a's successor
            turn = await fc.send_message(made["id"], "hello")
            assert turn["session_id"] == made["id"]

    asyncio.run(scenario())
