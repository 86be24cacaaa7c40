"""Packet loss (nftables) and latency (a userspace delay line, or netem) on a site's real link.

The root tests share one two-site lab (east, west, and the witness), each site in its own
network namespace. Every figure is measured from the root namespace over the lab's bridge:
raw ICMP echoes, TCP connects and Redis round trips to the sites' own addresses, nothing else.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skyfleet.drills import activity
from skyfleet.lab import faults, network, replication
from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.frontdoor import server_states
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.procs import Role, is_running, marked_pids
from skyfleet.lab.state import LabState, load_state

from .conftest import free_base_port, running

IS_ROOT = os.geteuid() == 0


def eventually(check: Callable[[], Any], *, timeout: float = 30.0, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    return result


def site_servers(state: LabState, site: str) -> dict[str, str]:
    return {s["server"]: s["status"] for s in server_states(state.state_dir) if s["site"] == site}


def redis_of(state: LabState, site: str) -> tuple[str, int]:
    rec = state.find(site=site, role=Role.REDIS)[0]
    return rec.host, rec.port


def can_connect(address: tuple[str, int], timeout: float = 1.0) -> bool:
    try:
        socket.create_connection(address, timeout=timeout).close()
    except TimeoutError:
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
        deadline = time.monotonic() + 1.0
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


class RedisLine:
    """One TCP connection to a lab Redis, held across faults: round trips on the same socket."""

    def __init__(self, address: tuple[str, int], password: str) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        assert self.command("AUTH", password) == b"+OK\r\n"

    def command(self, *args: str) -> bytes:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
        self.sock.sendall(b"".join(parts))
        return self.sock.recv(4096)

    def ping_ms(self, count: int = 15) -> float:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            assert self.command("PING") == b"+PONG\r\n"
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    def close(self) -> None:
        self.sock.close()


def _root_devices() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def netlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    if not IS_ROOT:
        pytest.skip("network namespaces need root")
    config = LabConfig(
        sites=["east", "west"],
        state_dir=tmp_path_factory.mktemp("netlab"),
        base_port=free_base_port(),
        netns=True,
    )
    yield from running(config)


# --- Errors (no root needed) ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -5, 100.5, "ten", True, None, float("nan"), 0.001])
def test_a_bad_loss_percent_is_refused_naming_the_field(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"^loss_percent: given .*; expected"):
        faults.add_packet_loss(str(tmp_path), "east", bad)
    with pytest.raises(LabError, match=r"^loss_percent: given"):
        faults.add_latency(str(tmp_path), "east", delay_ms=0, loss_percent=bad if bad else -1)


def test_network_faults_need_a_netns_lab(tmp_path: Path) -> None:
    state = up(LabConfig(sites=["solo"], state_dir=tmp_path / "lab", base_port=free_base_port(), tls=False))
    try:
        with pytest.raises(LabError) as partition:
            faults.partition_site(state.state_dir, "solo")
        assert "--netns" in str(partition.value) and "runs on loopback" in str(partition.value)
        for fault in (
            lambda: faults.add_packet_loss(state.state_dir, "solo", 10),
            lambda: faults.clear_packet_loss(state.state_dir, "solo"),
            lambda: faults.add_latency(state.state_dir, "solo", delay_ms=20),
            lambda: activity.site_packet_loss(
                "solo", loss_percent=10, configuration={"skyfleet_lab_dir": state.state_dir}
            ),
        ):
            with pytest.raises(LabError) as caught:
                fault()
            assert str(caught.value) == str(partition.value)
        with pytest.raises(LabError, match="site 'nowhere' is not in the lab"):
            faults.add_packet_loss(state.state_dir, "nowhere", 10)
    finally:
        down(state.state_dir)


def test_the_actions_are_registered_with_their_undo() -> None:
    fault, undo = activity.ACTIONS["site_packet_loss"], activity.ACTIONS["packet_loss_clear"]
    assert (fault.platform, fault.kind, fault.undo) == ("lab", "fault", "packet_loss_clear")
    assert (undo.kind, undo.undo) == ("rollback", None)
    text = fault.describe(None, {"site": "west", "loss_percent": 30})
    assert "30 %" in text and "nftables" in text and "'west'" in text
    assert "nftables table" in undo.describe(None, {"site": "west"})


# --- Packet loss (root) ----------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="network namespaces and nftables need root")
def test_full_loss_cuts_the_site_off_and_clearing_restores_it(netlab: LabState) -> None:
    west, east = redis_of(netlab, "west"), redis_of(netlab, "east")
    west_ns = netlab.network.sites["west"].namespace if netlab.network else ""
    # Another table in the site's namespace: the fault must never touch it.
    network.nft(west_ns, "add", "table", "inet", "bystander")
    configuration = {"skyfleet_lab_dir": netlab.state_dir}
    try:
        assert can_connect(west) and set(site_servers(netlab, "west").values()) == {"UP"}
        applied = activity.site_packet_loss("west", loss_percent=100, configuration=configuration)
        assert applied["key"] == "loss:west" and applied["rule"] == "every packet"
        assert not can_connect(west), "a TCP connect through 100 % loss succeeded"
        assert can_connect(east)  # only west's link is affected
        eventually(
            lambda: set(site_servers(netlab, "west").values()) == {"DOWN"},
            what="the front door to mark west's replicas DOWN",
        )
        # (east's replicas are not asserted on: their /readyz asks every Sentinel, west's too, so
        # the app may time out a check; the network-level check above is what isolates west.)

        cleared = activity.packet_loss_clear("west", configuration=configuration)
        assert cleared["restored"] and cleared["results"][0]["changed"]
        assert cleared["results"][0]["dropped"]["in"] > 0 and cleared["results"][0]["dropped"]["out"] > 0
        assert can_connect(west)
        assert set(site_servers(netlab, "west").values()) == {"UP"}  # the undo waits for that
        assert not faults.clear_packet_loss(netlab.state_dir, "west")["changed"]  # idempotent
        assert network.tables(west_ns) == ["inet bystander"]
        eventually(
            lambda: {s["status"] for s in server_states(netlab.state_dir)} == {"UP"},
            what="every front door server UP again",
        )
    finally:
        network.nft(west_ns, "delete", "table", "inet", "bystander", check=False)


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="network namespaces and nftables need root")
def test_partial_loss_drops_that_share_of_packets_each_way(netlab: LabState) -> None:
    assert netlab.network is not None
    link = netlab.network.sites["west"]
    assert echo_replies(link.address, 1000) >= 990  # the measurement itself loses nothing
    faults.add_packet_loss(netlab.state_dir, "west", 30)
    try:
        answered = echo_replies(link.address, 1000)
        seen = network.packet_loss(link)
    finally:
        faults.clear_packet_loss(netlab.state_dir, "west")
    # Request and reply each cross the link once: 0.7 × 0.7 = 49 % answered (70 % if only one
    # direction were affected); ±4 standard deviations of 1000 draws.
    assert 420 <= answered <= 560, f"{answered} of 1000 echoes answered through 30 % loss"
    assert seen is not None and seen["loss_percent"] == 30
    dropped = seen["dropped"]
    assert isinstance(dropped, dict) and dropped["in"] >= 200 and dropped["out"] >= 100
    assert echo_replies(link.address, 1000) >= 990
    # Sub-percent precision, and applying again replaces the figure.
    faults.add_packet_loss(netlab.state_dir, "west", 0.25)
    try:
        assert faults.add_packet_loss(netlab.state_dir, "west", 0.5)["rule"] == "numgen random mod 10000 < 50"
        assert network.tables(link.namespace) == [f"inet {network.LOSS_TABLE}"]
    finally:
        faults.clear_packet_loss(netlab.state_dir, "west")
    assert network.tables(link.namespace) == []


# --- Latency (root) --------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="network namespaces need root")
def test_latency_delays_round_trips_and_its_undo_keeps_connections(netlab: LabState) -> None:
    assert netlab.network is not None
    link = netlab.network.sites["west"]
    password = replication.password_of(netlab)
    held = RedisLine(redis_of(netlab, "west"), password)
    try:
        before = held.ping_ms()
        applied = faults.add_latency(netlab.state_dir, "west", delay_ms=30)
        if not network.netem_available():
            assert applied["mechanism"] == "delay line"
        during = held.ping_ms()
        fresh = RedisLine(redis_of(netlab, "west"), password)
        fresh_during = fresh.ping_ms(5)
        fresh.close()
        # 30 ms each way: at least 60 ms per round trip, on the connection held from before.
        assert before < 10 and 60 <= during < 120, (before, during)
        assert 60 <= fresh_during < 120
        assert set(site_servers(netlab, "west").values()) == {"UP"}  # slow, not cut off
        # Frames far above the MTU (GSO) cross the line intact: 4 MiB replicated from east's
        # primary to west's replica, then read back from west, both through the delay.
        value = secrets.token_hex(2 * 1024 * 1024)
        with replication.client(*redis_of(netlab, "east"), password) as primary:
            primary.set("skyfleet-test:delay-line", value)
        try:
            with replication.client(*redis_of(netlab, "west"), password, timeout=10) as replica:
                eventually(
                    lambda: replica.get("skyfleet-test:delay-line") == value,
                    what="the 4 MiB value to reach west through the delay line",
                )
        finally:
            with replication.client(*redis_of(netlab, "east"), password) as primary:
                primary.delete("skyfleet-test:delay-line")
        assert faults.clear_latency(netlab.state_dir, "west")["changed"]
        after = held.ping_ms()
        assert after < 10, after
        assert not faults.clear_latency(netlab.state_dir, "west")["changed"]  # idempotent
    finally:
        held.close()
        faults.clear_latency(netlab.state_dir, "west")
    if not network.netem_available():
        tap, sink = network.delay_devices(link)
        assert network.link_master(link.veth_host) == netlab.network.bridge
        assert not {tap, sink} & _root_devices()
        assert load_state(netlab.state_dir).delay_lines == {}


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="network namespaces need root")
def test_latency_loss_without_netem_uses_its_own_nftables_table(netlab: LabState) -> None:
    if network.netem_available():
        pytest.skip("this kernel has netem: add_latency uses tc netem")
    assert netlab.network is not None
    link = netlab.network.sites["west"]
    loss_only = faults.add_latency(netlab.state_dir, "west", delay_ms=0, jitter_ms=0, loss_percent=100)
    try:
        assert loss_only["mechanism"] == "nftables"
        assert not can_connect(redis_of(netlab, "west"))
        assert network.tables(link.namespace) == [f"inet {network.LATENCY_LOSS_TABLE}"]
        # A site_packet_loss on the same site is another fault: clearing it leaves this one, and
        # does not wait for a site that this one still cuts off.
        faults.add_packet_loss(netlab.state_dir, "west", 10)
        assert faults.network_faults(netlab.state_dir, "west") == ["packet_loss", "latency_loss"]
        assert faults.clear_packet_loss(netlab.state_dir, "west")["changed"]
        assert network.tables(link.namespace) == [f"inet {network.LATENCY_LOSS_TABLE}"]
        both = faults.add_latency(netlab.state_dir, "west", delay_ms=5, jitter_ms=2, loss_percent=1)
        assert both["mechanism"] == "delay line + nftables"
        line = load_state(netlab.state_dir).delay_lines["west"]
        assert is_running(line)
        assert faults.network_faults(netlab.state_dir, "west") == ["delay_line", "latency_loss"]
        # A delay line that dies leaves the site cut off; the undo repairs the link anyway.
        assert line.pid is not None
        os.killpg(line.pid, signal.SIGKILL)
        eventually(lambda: not is_running(line), what="the delay line to die")
        assert not can_connect(redis_of(netlab, "west"), timeout=0.5)
        assert faults.network_faults(netlab.state_dir, "west") == ["delay_line", "latency_loss"]
    finally:
        faults.clear_latency(netlab.state_dir, "west")
    assert network.tables(link.namespace) == []
    assert can_connect(redis_of(netlab, "west"))
    assert set(site_servers(netlab, "west").values()) == {"UP"}
    with pytest.raises(LabError, match="all 0: nothing to inject"):
        faults.add_latency(netlab.state_dir, "west", delay_ms=0, jitter_ms=0, loss_percent=0)


# --- Down (root; last: it stops the module's lab) -------------------------------------------


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="network namespaces need root")
def test_down_removes_every_network_fault_and_leaves_the_root_namespace_clean(netlab: LabState) -> None:
    assert netlab.network is not None
    root_tables = network.tables()
    assert not any("skyfleet" in t for t in root_tables)
    faults.add_packet_loss(netlab.state_dir, "west", 50)
    faults.add_latency(netlab.state_dir, "east", delay_ms=5, loss_percent=5)
    if not network.netem_available():
        east = netlab.network.sites["east"]
        assert set(network.delay_devices(east)) <= _root_devices()
    result = down(netlab.state_dir)
    assert result["ports_free"] and marked_pids(netlab.state_dir) == []
    assert not [ns for ns in _namespaces() if ns.startswith(f"skyfleet-{netlab.lab_id}-")]
    assert not [d for d in _root_devices() if netlab.lab_id in d]  # bridge, veths, TAP, sink
    assert network.tables() == root_tables
