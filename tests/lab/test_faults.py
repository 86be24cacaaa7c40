"""The twin's faults and their undos, each measured from outside as a client or a peer sees it.

Each test breaks one thing on the shared twin, checks what the platform the plan describes would
show (a load balancer's health checks, a cache's failover, a broker's durability, a cut or slow
link), undoes it, and leaves the twin healthy for the next test.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent_app.contract import SITE_HEADER
from skyfleet.drills import activity
from skyfleet.lab import faults, network
from skyfleet.lab.errors import LabError
from skyfleet.lab.state import LabState, load_state
from skyfleet.lab.status import lab_status, process_state
from tests.support.twin import client, eventually, site_name, wait_healthy


@pytest.fixture(autouse=True)
def healthy_twin(twin: LabState) -> LabState:
    wait_healthy(twin.state_dir)
    return twin


def _process(twin: LabState, name: str) -> str:
    return process_state(load_state(twin.state_dir).get(name))


def can_connect(address: tuple[str, int], timeout: float = 1.0) -> bool:
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError:
        return False
    return True


def echo_replies(address: str, count: int) -> int:
    """Send ``count`` ICMP echo requests to ``address`` at once; return how many were answered."""
    ident = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 23)  # SO_RCVBUFFORCE: hold every reply
        for seq in range(count):
            body = struct.pack("!HH", ident, seq) + b"skyfleet"
            header = struct.pack("!BBH", 8, 0, 0)
            sock.sendto(header[:2] + struct.pack("!H", _checksum(header + body)) + body, (address, 0))
        answered: set[int] = set()
        sock.settimeout(0.1)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and len(answered) < count:
            try:
                packet, source = sock.recvfrom(2048)
            except TimeoutError:
                continue
            icmp = packet[(packet[0] & 0x0F) * 4 :]
            kind, _, _, who, seq = struct.unpack("!BBHHH", icmp[:8])
            if source[0] == address and kind == 0 and who == ident:
                answered.add(seq)
    return len(answered)


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def connect_ms(address: tuple[str, int], count: int = 9) -> float:
    """Median TCP connect time: one round trip through the site's uplink."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        socket.create_connection(address, timeout=10).close()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[count // 2]


# --- replicas --------------------------------------------------------------------------------


def test_a_lost_replica_is_killed_once_and_comes_back_in_rotation(twin: LabState) -> None:
    # How its load balancer's health checks take it out meanwhile, and what that costs users,
    # is the replica-loss drill's to measure (tests/lab/test_drills.py): that wait is 45 s.
    fault = faults.kill_replica(twin.state_dir, "aws-prod", 0)
    try:
        assert fault["killed"] == ["aws-prod/api-0/api"]
        assert _process(twin, "aws-prod/api-0/api") == "stopped"
        assert faults.kill_replica(twin.state_dir, "aws-prod", 0)["killed"] == []  # idempotent
    finally:
        restarted = faults.restart_replica(twin.state_dir, "aws-prod", 0)
    assert restarted["started"] == ["aws-prod/api-0/api"]
    assert faults.backends(load_state(twin.state_dir), "aws-prod")["aws-prod/api-0"].startswith("UP")
    with client(twin, site_name(twin, "aws-prod")) as http:
        replies = [http.post("/v1/sessions", json={}) for _ in range(6)]
    assert [r.status_code for r in replies] == [201] * 6


def test_a_hung_replica_is_paused_and_resumes(twin: LabState) -> None:
    paused = faults.pause_replica(twin.state_dir, "onprem-prod", 1)
    try:
        assert paused["paused"] == ["onprem-prod/api-1/api"]
        eventually(lambda: _process(twin, "onprem-prod/api-1/api") == "paused", timeout=10, what="SIGSTOP")
    finally:
        resumed = faults.resume_replica(twin.state_dir, "onprem-prod", 1)
    assert resumed["resumed"] == ["onprem-prod/api-1/api"]
    assert _process(twin, "onprem-prod/api-1/api") == "running"


def test_a_bad_replica_or_site_is_refused_naming_what_exists(twin: LabState) -> None:
    with pytest.raises(LabError, match=r"index: aws-prod has no api replica 7 \(it has \['api-0'"):
        faults.kill_replica(twin.state_dir, "aws-prod", 7)
    with pytest.raises(LabError, match="site: 'mars' is not a site of this lab"):
        faults.stop_site(twin.state_dir, "mars")


# --- caches ----------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["aws-prod", "onprem-prod"])
def test_a_lost_cache_primary_fails_over_within_the_site_and_keeps_sessions(
    twin: LabState, site: str
) -> None:
    """aws-prod: the managed cache's failover (its endpoint moves); onprem-prod: the stack's own
    Sentinels elect a replica. Either way the site's sessions survive and writes come back."""
    with client(twin, site_name(twin, site)) as http:
        sid = http.post("/v1/sessions", json={}).json()["id"]
        for i in range(3):
            turn = http.post(f"/v1/sessions/{sid}/messages", json={"content": f"turn {i}"})
            assert turn.status_code == 200, turn.text
        old = faults.cache_primary(twin.state_dir, site)["primary"]
        assert old is not None
        lost = faults.kill_cache_primary(twin.state_dir, site)
        try:
            assert lost["node"] == old
            eventually(
                lambda: (p := faults.cache_primary(twin.state_dir, site)["primary"]) and p != old,
                timeout=90,
                what=f"{site}'s cache to promote a replica",
            )

            def written() -> bool:
                reply = http.post(f"/v1/sessions/{sid}/messages", json={"content": "after the loss"})
                return reply.status_code == 200

            eventually(written, timeout=60, what="writes through the new primary")
            history = http.get(f"/v1/sessions/{sid}").json()["messages"]
            users = [m["content"] for m in history if m["role"] == "user"]
            assert users[:3] == ["turn 0", "turn 1", "turn 2"] and users[-1] == "after the loss"
        finally:
            faults.restore_cache(twin.state_dir, site)
    roles = faults.cache_primary(twin.state_dir, site)["roles"]
    assert roles[old] == "slave" and list(roles.values()).count("master") == 1


@pytest.mark.parametrize("site", ["aws-prod", "onprem-prod"])
def test_a_cache_node_restored_before_the_failover_ends_comes_back_as_a_replica(
    twin: LabState, site: str
) -> None:
    """Brought back at once (a drill's rollback on a slow machine), the lost primary waits for
    the failover and rejoins as a replica: it never comes back an empty primary."""
    with client(twin, site_name(twin, site)) as http:
        sid = http.post("/v1/sessions", json={}).json()["id"]
        assert http.post(f"/v1/sessions/{sid}/messages", json={"content": "before"}).status_code == 200
        lost = faults.kill_cache_primary(twin.state_dir, site)
        faults.restore_cache(twin.state_dir, site)  # before the 5 s the failover waits
        roles = faults.cache_primary(twin.state_dir, site)["roles"]
        assert roles[lost["node"]] == "slave" and list(roles.values()).count("master") == 1, roles

        def kept() -> bool:
            reply = http.get(f"/v1/sessions/{sid}")
            return reply.status_code == 200 and reply.json()["turns"] == 1

        eventually(kept, timeout=60, what=f"{site}'s session read back after the failover")


# --- brokers ---------------------------------------------------------------------------------


def test_tasks_queued_while_pubsub_is_down_are_not_lost(twin: LabState) -> None:
    """The Pub/Sub server keeps accepted messages on disk: a task accepted before the outage
    runs once the service is back."""
    with client(twin, site_name(twin, "gcp-prod")) as http:
        sid = http.post("/v1/sessions", json={}).json()["id"]
        stopped = faults.stop_broker(twin.state_dir, "gcp-prod")
        try:
            assert stopped["killed"]
            refused = http.post(f"/v1/sessions/{sid}/tasks", json={"input": "during"})
            assert refused.status_code == 503, refused.text  # not accepted, so not lost
        finally:
            faults.start_broker(twin.state_dir, "gcp-prod")
        accepted = eventually(
            lambda: (
                (r := http.post(f"/v1/sessions/{sid}/tasks", json={"input": "after"})).status_code == 202
                and r
            ),
            timeout=60,
            what="gcp-prod to accept tasks again",
        )
        url = accepted.json()["status_url"]
        eventually(lambda: http.get(url).json()["status"] == "succeeded", timeout=90, what="the task to run")


def test_a_frozen_sqs_endpoint_thaws_with_its_messages(twin: LabState) -> None:
    frozen = faults.stop_broker(twin.state_dir, "aws-prod")
    try:
        assert frozen["frozen"] == ["aws-prod/sqs"]
        eventually(lambda: _process(twin, "aws-prod/sqs") == "paused", timeout=10, what="SIGSTOP to land")
    finally:
        thawed = faults.start_broker(twin.state_dir, "aws-prod")
    assert thawed["thawed"] == frozen["frozen"]
    with client(twin, site_name(twin, "aws-prod")) as http:
        sid = http.post("/v1/sessions", json={}).json()["id"]
        task = eventually(
            lambda: (
                (r := http.post(f"/v1/sessions/{sid}/tasks", json={"input": "x"})).status_code == 202 and r
            ),
            timeout=60,
            what="aws-prod to accept tasks again",
        )
        url = task.json()["status_url"]
        eventually(lambda: http.get(url).json()["status"] == "succeeded", timeout=90, what="the task to run")


# --- the network -----------------------------------------------------------------------------


def _lb(twin: LabState, site: str) -> tuple[str, int]:
    return twin.sites[site].lb_address, 443


def test_a_partition_cuts_the_site_off_and_healing_restores_it(twin: LabState) -> None:
    cut = faults.partition_site(twin.state_dir, "gcp-prod")
    try:
        assert cut["fault"] == "partition_site"
        assert faults.network_faults(twin.state_dir, "gcp-prod") == ["partition"]
        assert not can_connect(_lb(twin, "gcp-prod"))
        assert can_connect(_lb(twin, "onprem-prod"))  # only gcp-prod's link is cut
        # Inside, the site keeps running: its processes are untouched.
        report = lab_status(twin.state_dir)
        gcp = [p for p in report["processes"] if p["site"] == "gcp-prod"]
        assert gcp and all(p["state"] == "running" for p in gcp)
    finally:
        faults.heal_partition(twin.state_dir, "gcp-prod")
    assert faults.network_faults(twin.state_dir, "gcp-prod") == []
    assert can_connect(_lb(twin, "gcp-prod"))


def attempt_with_fresh_neighbour(address: tuple[str, int], timeout: float) -> OSError:
    """A connection attempt that must fail, made as a client that has not reached the address
    before (its ARP entry flushed): what the failure was."""
    subprocess.run(["ip", "neigh", "flush", "to", address[0]], check=True)
    with pytest.raises(OSError) as failed:
        socket.create_connection(address, timeout=timeout)
    return failed.value


@pytest.mark.parametrize("silent", [False, True], ids=["link-down", "silent"])
def test_what_a_cut_answers(twin: LabState, silent: bool) -> None:
    """Link down, the lab's network answers "unreachable" once its ARP tries fail (about 3 s for
    a client new to the address); a silent cut, as towards a site lost on the internet, never
    answers: the attempt waits out its own timeout."""
    address = _lb(twin, "gcp-prod")
    cut = faults.partition_site(twin.state_dir, "gcp-prod", silent=silent)
    try:
        assert cut["silent"] is silent
        assert faults.network_faults(twin.state_dir, "gcp-prod") == ["partition"]
        failure = attempt_with_fresh_neighbour(address, timeout=5)
        if silent:
            assert isinstance(failure, TimeoutError), failure
        else:
            assert failure.errno == errno.EHOSTUNREACH, failure
    finally:
        faults.heal_partition(twin.state_dir, "gcp-prod")
    assert faults.network_faults(twin.state_dir, "gcp-prod") == []
    assert can_connect(address)


def test_a_request_passed_to_a_home_that_fell_silent_is_not_held_until_its_timeout(twin: LabState) -> None:
    """A site passes requests for a session homed elsewhere on kept connections. When the home
    falls silent (a site lost on the internet: no reset, no refusal), keepalive breaks those
    connections within seconds, where the forward's own bound is 30 s, past a client's 15 s. A
    read, and a turn with an Idempotency-Key, are then served by the home's successor (the turn
    once); a turn without a key answers 504 (it may have run at the home)."""
    with client(twin, site_name(twin, "aws-prod")) as home:
        sids = [home.post("/v1/sessions", json={}).json()["id"] for _ in range(3)]
    read_sid, keyed_sid, plain_sid = sids
    onprem = site_name(twin, "onprem-prod")
    with client(twin, onprem) as reader, client(twin, onprem) as keyed, client(twin, onprem) as plain:
        # Every onprem-prod api (three) passes reads of the sessions to their home: each keeps a
        # connection there, and a copy of where the sessions live.
        for sid in sids * 6:
            passed = reader.get(f"/v1/sessions/{sid}")
            assert passed.status_code == 200 and passed.headers[SITE_HEADER] == "aws-prod"
        faults.partition_site(twin.state_dir, "aws-prod", silent=True)
        try:
            # At once, so the load balancer (round robin) gives them three apis that each still
            # hold a connection to the home.
            with ThreadPoolExecutor(3) as pool:
                reading = pool.submit(reader.get, f"/v1/sessions/{read_sid}")
                keyed_turn = pool.submit(
                    keyed.post,
                    f"/v1/sessions/{keyed_sid}/messages",
                    json={"content": "once"},
                    headers={"Idempotency-Key": "silent-home-turn-1"},
                )
                plain_turn = pool.submit(
                    plain.post, f"/v1/sessions/{plain_sid}/messages", json={"content": "x"}
                )
                read, turn, unkeyed = reading.result(), keyed_turn.result(), plain_turn.result()
            assert read.status_code == 200, read.text
            assert read.headers[SITE_HEADER] == "gcp-prod"  # aws-prod's successor took it over
            assert turn.status_code == 200, turn.text
            assert turn.headers[SITE_HEADER] == "gcp-prod"
            history = keyed.get(f"/v1/sessions/{keyed_sid}").json()["messages"]
            assert [m["content"] for m in history if m["role"] == "user"] == ["once"]
            assert unkeyed.status_code == 504 and unkeyed.json()["code"] == "gateway_timeout", unkeyed.text
        finally:
            faults.heal_partition(twin.state_dir, "aws-prod")


def test_partial_loss_drops_that_share_of_packets_each_way(twin: LabState) -> None:
    address = twin.sites["onprem-prod"].lb_address
    assert echo_replies(address, 1000) >= 990  # the measurement itself loses nothing
    applied = activity.site_packet_loss(
        "onprem-prod", loss_percent=30, configuration={"skyfleet_lab_dir": twin.state_dir}
    )
    try:
        assert applied["key"] == "loss:onprem-prod"
        answered = echo_replies(address, 1000)
        seen = network.packet_loss(load_state(twin.state_dir).fabric.sites["onprem-prod"])
    finally:
        cleared = faults.clear_packet_loss(twin.state_dir, "onprem-prod")
    # Request and reply each cross the uplink once: 0.7 × 0.7 = 49 % answered (70 % if only one
    # direction were affected); ±4 standard deviations of 1000 draws.
    assert 420 <= answered <= 560, f"{answered} of 1000 echoes answered through 30 % loss"
    assert seen is not None and seen["loss_percent"] == 30
    assert cleared["changed"] and cleared["dropped"]["in"] >= 200 and cleared["dropped"]["out"] >= 100
    assert echo_replies(address, 1000) >= 990
    assert not faults.clear_packet_loss(twin.state_dir, "onprem-prod")["changed"]  # idempotent


def test_latency_delays_round_trips_through_the_uplink_only(twin: LabState) -> None:
    lb = _lb(twin, "onprem-prod")
    before = connect_ms(lb)
    applied: dict[str, Any] = faults.add_latency(twin.state_dir, "onprem-prod", delay_ms=40)
    try:
        during = connect_ms(lb)
        other = connect_ms(_lb(twin, "aws-prod"))
        # 40 ms each way: a connect's round trip takes at least 80 ms more.
        assert during >= before + 80, (before, during, applied)
        assert other < during - 60  # only onprem-prod's link is slow
        with client(twin, site_name(twin, "onprem-prod")) as http:
            reply = http.post("/v1/sessions", json={})
        assert reply.status_code == 201 and reply.headers[SITE_HEADER] == "onprem-prod"
    finally:
        assert faults.clear_latency(twin.state_dir, "onprem-prod")["changed"]
    assert connect_ms(lb) < before + 40
    assert faults.network_faults(twin.state_dir, "onprem-prod") == []
