"""The lab's DNS server as a real process, answering the edge plan's Route 53 zone from real
health checks of small real HTTPS sites on loopback (failover, weighted and multivalue), and
the client resolver that honours the answers' TTLs (plugged into httpx, verifying each site's
certificate for the name, racing a name's addresses as httpx's AnyIO backend does)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from dnslib import QTYPE, RCODE

from skyfleet.lab import dns
from skyfleet.lab.resolver import (
    AsyncResolvingTransport,
    CachingResolver,
    Dial,
    NameNotFound,
    ResolvingTransport,
)
from skyfleet.lab.route53 import Edge, edge_from_plan
from skyfleet.testing.edge import (
    GLOBAL_NAME,
    ROOT,
    Site,
    TestCA,
    a_records,
    cname_of,
    common_free_port,
    dns_server,
    edge,
    edge_config,
    fast,
    loopback_block,
    query,
    sites,
)
from tests.support.multivalue_edge import multivalue_plan, record

INTERVAL = 0.2  # the tests' health-check interval (the plan's is 10 s)
SITE_TTL = 60  # the TTL the tests give each site host's A record


class Clock:
    """What the resolver's TTLs count against, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Edgelab:
    """The edge of one variant of the plan, its sites and its DNS server."""

    def __init__(self, variant: str, ca: TestCA, directory: Path) -> None:
        self.variant = variant
        self.ca = ca
        self.directory = directory
        planned = edge(variant)
        self.hosts = {c.site: c.fqdn or "" for c in planned.health_checks}
        self.planned = planned

    def start(self, stack: Any) -> Edgelab:
        names_hosts = [(site, [host, GLOBAL_NAME]) for site, host in self.hosts.items()]
        self.sites, self.port = stack.enter_context(sites(names_hosts, self.ca, self.directory))
        self.by_name = {s.name: s for s in self.sites}
        checks = tuple(fast(c, port=self.port, interval=INTERVAL) for c in self.planned.health_checks)
        self.config = dns.DnsConfig.for_edge(
            Edge(records=self.planned.records, health_checks=checks),
            listen="127.0.0.1",
            port=0,
            events_file=self.directory / "events.jsonl",
            static_names={self.hosts[s.name]: ([s.address], SITE_TTL) for s in self.sites},
            seed=11,
        )
        self.dns = stack.enter_context(dns_server(self.config, self.directory))
        return self

    def answer(self) -> tuple[str | None, list[str]]:
        reply = query(self.dns.address, GLOBAL_NAME)
        assert reply.header.rcode == RCODE.NOERROR
        return cname_of(reply, GLOBAL_NAME), a_records(reply)

    def wait_health(self, site: str, healthy: bool, after: float = 0.0) -> dict[str, Any]:
        def match(e: dict[str, Any]) -> bool:
            return (
                e.get("event") == "health"
                and e["site"] == site
                and e["healthy"] is healthy
                and e["t"] >= after
            )

        return dns.wait_event(self.dns.events_file, match, timeout=30)

    def wait_probes(self, site: str, ok: bool, count: int = 1) -> None:
        """Until every checker of ``site`` has had ``count`` probes with result ``ok``."""
        regions = len(self.planned.health_checks[0].regions)

        def enough(_: dict[str, Any]) -> bool:
            seen = Counter(
                e["region"]
                for e in self.dns.events()
                if e.get("event") == "probe" and e["site"] == site and e["ok"] is ok
            )
            return len(seen) == regions and min(seen.values()) >= count

        dns.wait_event(self.dns.events_file, enough, timeout=30)

    def restart(self, site: str) -> Site:
        old = self.by_name[site]
        new = Site(
            site, old.address, old.port, self.ca.issue([self.hosts[site], GLOBAL_NAME], self.directory, site)
        )
        self.by_name[site] = new.start()
        return new


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def lab(tmp_path: Path, ca: TestCA) -> Iterator[Edgelab]:
    with contextlib.ExitStack() as stack:
        yield Edgelab("shipped", ca, tmp_path).start(stack)


# --- failover ----------------------------------------------------------------------------------------


def test_failover_moves_to_the_secondary_after_threshold_failed_probes(lab: Edgelab) -> None:
    aws, gcp = lab.by_name["aws-prod"], lab.by_name["gcp-prod"]
    reply = query(lab.dns.address, GLOBAL_NAME)
    # As a recursive resolver gives it: the CNAME (the record's TTL), then the site's address.
    assert [(str(r.rname).rstrip("."), QTYPE[r.rtype], r.ttl) for r in reply.rr] == [
        (GLOBAL_NAME, "CNAME", edge_config()["ttl"]),
        (lab.hosts["aws-prod"], "A", SITE_TTL),
    ]
    assert lab.answer() == (lab.hosts["aws-prod"], [aws.address])
    clock = Clock()
    client = CachingResolver(lab.dns.address, clock=clock)
    assert client.resolve(GLOBAL_NAME) == [aws.address]

    lab.wait_probes("aws-prod", ok=True)  # every checker has seen the site up
    stopped_at = time.time()
    aws.stop()
    down = lab.wait_health("aws-prod", healthy=False)
    assert lab.answer() == (lab.hosts["gcp-prod"], [gcp.address])

    # Each checker turned after exactly `threshold` consecutive failed probes, one interval
    # apart at the least; the check turned when the last of its three checkers did.
    check = lab.config.health_checks[0]
    threshold, events = check.failure_threshold, lab.dns.events()
    turned = {}
    for region in check.regions:
        probes = [
            e
            for e in events
            if e.get("event") == "probe" and e["site"] == "aws-prod" and e["region"] == region
        ]
        (flip,) = [
            e
            for e in events
            if e.get("event") == "checker"
            and e["site"] == "aws-prod"
            and e["region"] == region
            and not e["healthy"]
        ]
        before = [p for p in probes if p["t"] < flip["t"]]
        failed = [p for p in before if not p["ok"]]
        assert len(failed) == threshold, (region, failed)
        assert before[-threshold:] == failed and before[-threshold - 1]["ok"]
        assert all(p["t"] + p["duration_ms"] / 1000 >= stopped_at for p in failed)
        # Probes run on the checker's own schedule (a probe the machine delayed says by how much;
        # the wall clock between them is not asserted): each tick a whole number of intervals
        # after the last, one unless the machine held a probe past the next tick, which is then
        # skipped rather than probed in a burst.
        ticks = [p["t"] - p["late_ms"] / 1000 for p in probes]
        assert all(p["late_ms"] >= 0 for p in probes)
        for a, b in itertools.pairwise(ticks):
            steps = round((b - a) / INTERVAL)
            assert steps >= 1 and b - a == pytest.approx(steps * INTERVAL, abs=0.01), (region, ticks)
        turned[region] = flip["t"]
    assert down["t"] == max(turned.values())
    assert (down["healthy_checkers"], down["checkers"]) == (0, 3)
    routing = dns.wait_event(
        lab.dns.events_file, lambda e: e.get("event") == "routing" and e["t"] >= down["t"], timeout=10
    )
    assert routing["routing"][GLOBAL_NAME] == [lab.hosts["gcp-prod"]]

    # A client honouring the TTL keeps the old answer until the CNAME's TTL is over.
    ttl = edge_config()["ttl"]
    assert client.resolve(GLOBAL_NAME) == [aws.address]
    clock.now += ttl - 0.1
    assert client.resolve(GLOBAL_NAME) == [aws.address]
    clock.now += 0.1
    assert client.resolve(GLOBAL_NAME) == [gcp.address]


def test_alias_tiers_route_three_sites_in_priority_order(lab: Edgelab) -> None:
    aws, gcp, onprem = (lab.by_name[s] for s in ("aws-prod", "gcp-prod", "onprem-prod"))
    assert lab.answer()[1] == [aws.address]
    gcp.stop()
    lab.wait_health("gcp-prod", healthy=False)
    assert lab.answer()[1] == [aws.address]  # the primary is healthy: a lower tier does not matter
    aws.stop()
    lab.wait_health("aws-prod", healthy=False)
    # Tier 1's alias evaluates its target: gcp is down, so the answer is tier 1's secondary.
    assert lab.answer() == (lab.hosts["onprem-prod"], [onprem.address])
    recovered_from = time.time()
    lab.restart("gcp-prod")
    up = lab.wait_health("gcp-prod", healthy=True, after=recovered_from)
    assert up["healthy_checkers"] == 1  # one checker of three is more than 18 %
    assert lab.answer() == (lab.hosts["gcp-prod"], [gcp.address])
    onprem.stop()
    lab.wait_health("onprem-prod", healthy=False)
    assert lab.answer()[1] == [gcp.address]


def test_weighted_routing_spreads_by_weight_and_skips_an_unhealthy_site(tmp_path: Path, ca: TestCA) -> None:
    with contextlib.ExitStack() as stack:
        lab = Edgelab("weighted", ca, tmp_path).start(stack)
        address = {s.address: s.name for s in lab.sites}
        counts = Counter(address[lab.answer()[1][0]] for _ in range(500))
        # Weights 100/100/50: shares 0.4/0.4/0.2; sd of a share of 500 is under 0.022.
        for site, share in (("aws-prod", 0.4), ("gcp-prod", 0.4), ("onprem-prod", 0.2)):
            assert counts[site] / 500 == pytest.approx(share, abs=0.1)
        lab.by_name["gcp-prod"].stop()
        lab.wait_health("gcp-prod", healthy=False)
        counts = Counter(address[lab.answer()[1][0]] for _ in range(300))
        assert set(counts) == {"aws-prod", "onprem-prod"}
        assert counts["aws-prod"] / 300 == pytest.approx(2 / 3, abs=0.12)


# --- static names, TTL, unknown names --------------------------------------------------------------


def static_config(directory: Path, names: dict[str, tuple[list[str], int]]) -> dns.DnsConfig:
    """A server with static names only (no zone, no health checks)."""
    return dns.DnsConfig.model_validate(
        {
            "listen": "127.0.0.1",
            "port": 0,
            "events_file": str(directory / "events.jsonl"),
            "static_names": {n: {"addresses": addrs, "ttl": ttl} for n, (addrs, ttl) in names.items()},
        }
    )


def test_static_names_change_at_run_time_and_the_resolver_keeps_its_ttl(tmp_path: Path) -> None:
    name = "primary.cache.lab.internal"
    config = static_config(tmp_path, {name: (["127.0.9.1"], 30)})
    with dns_server(config, tmp_path) as server:
        clock = Clock()
        client = CachingResolver(server.address, clock=clock)
        assert client.resolve(name) == ["127.0.9.1"]
        reload = server.update(static_config(tmp_path, {name: (["127.0.9.2"], 30)}))
        assert reload["event"] == "reload"
        assert a_records(query(server.address, name)) == ["127.0.9.2"]  # the server moved at once
        queries = client.queries
        clock.now += 29.9
        assert client.resolve(name) == ["127.0.9.1"]  # the client keeps it for its TTL
        assert client.queries == queries  # from its cache, not the server
        clock.now += 0.1
        assert client.resolve(name) == ["127.0.9.2"]
        # A config the server refuses changes nothing.
        bad = static_config(tmp_path, {name: (["127.0.9.3"], 30)}).model_dump(mode="json")
        bad["static_names"][name]["ttl"] = -1
        server.config_path.write_text(json.dumps(bad))
        digest = hashlib.sha256(server.config_path.read_bytes()).hexdigest()
        with pytest.raises(dns.DnsConfigError, match=r"static_names\..*ttl"):
            dns.reload(server.proc.pid, server.events_file, digest)
        assert a_records(query(server.address, name)) == ["127.0.9.2"]


def test_unknown_names_are_nxdomain_and_nothing_is_forwarded(lab: Edgelab) -> None:
    server = lab.dns.address
    for name in ("example.com", "nowhere.agents.example.com", f"x.{GLOBAL_NAME}"):
        reply = query(server, name)
        assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr, name
    with pytest.raises(NameNotFound, match=r"example\.com: no such name"):
        CachingResolver(server).resolve("example.com")
    host = lab.hosts["gcp-prod"]
    # A known name without the asked type: NOERROR, no data.
    reply = query(server, host, "AAAA")
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr
    # A CNAME query gets the CNAME alone; TCP answers as UDP does.
    reply = query(server, GLOBAL_NAME, "CNAME", tcp=True)
    assert [QTYPE[r.rtype] for r in reply.rr] == ["CNAME"]
    assert a_records(query(server, host, tcp=True)) == [lab.by_name["gcp-prod"].address]


# --- httpx through the resolver ---------------------------------------------------------------------


def test_httpx_reaches_the_site_by_name_and_verifies_its_certificate(lab: Edgelab, tmp_path: Path) -> None:
    aws = lab.by_name["aws-prod"]
    resolver = CachingResolver(lab.dns.address)
    with httpx.Client(
        transport=ResolvingTransport(resolver, verify=lab.ca.client_context()), timeout=5
    ) as client:
        response = client.get(f"https://{GLOBAL_NAME}:{lab.port}/whoami")
    assert response.text == "aws-prod\n"
    # The connection went to the resolved address, but TLS and HTTP kept the name (the
    # health checks send the site's own host name).
    assert GLOBAL_NAME in aws.sni
    (request,) = [r for r in aws.requests if r["path"] == "/whoami"]
    assert request["host"] == f"{GLOBAL_NAME}:{lab.port}"

    # A site whose certificate does not cover the name is refused.
    other = "elsewhere.lab.internal"
    impostor = Site(
        "impostor", aws.address, 0, lab.ca.issue(["not-the-name.example"], tmp_path, "imp")
    ).start()
    try:
        config = lab.config.model_copy(
            update={
                "static_names": {
                    **lab.config.static_names,
                    other: dns.StaticName(addresses=(aws.address,), ttl=5),
                }
            }
        )
        lab.dns.update(config)
        with (
            httpx.Client(transport=ResolvingTransport(resolver, verify=lab.ca.client_context())) as client,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            client.get(f"https://{other}:{impostor.port}/")
    finally:
        impostor.stop()


async def test_async_httpx_reaches_the_site_by_name(lab: Edgelab) -> None:
    transport = AsyncResolvingTransport(CachingResolver(lab.dns.address), verify=lab.ca.client_context())
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        response = await client.get(f"https://{GLOBAL_NAME}:{lab.port}/")
    assert response.text == "aws-prod\n"
    assert GLOBAL_NAME in lab.by_name["aws-prod"].sni


# --- config errors -----------------------------------------------------------------------------------


def test_a_bad_config_stops_the_server_with_the_file_and_field(tmp_path: Path) -> None:
    config = static_config(tmp_path, {}).model_dump(mode="json")
    config["port"] = "fifty-three"
    config["records"] = [r.model_dump(mode="json") for r in edge().records]  # checks missing
    path = tmp_path / "dns.json"
    path.write_text(json.dumps(config))
    run = subprocess.run(
        [sys.executable, "-m", "skyfleet.lab.dns", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 2
    assert f"{path}: port:" in run.stderr
    config["port"] = 0
    path.write_text(json.dumps(config))
    run = subprocess.run(dns.command(path), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2
    assert re.search(r"dns\.json: .*record [\w-]+: healthCheckId '[\w-]+' is not a health check", run.stderr)


# --- multivalue answers --------------------------------------------------------------------------------


def test_multivalue_answers_every_healthy_site_and_drops_an_unhealthy_one(tmp_path: Path, ca: TestCA) -> None:
    planned = edge_from_plan(multivalue_plan().resources)
    hosts = {c.site: c.fqdn or "" for c in planned.health_checks}
    ttl = edge_config()["ttl"]
    with contextlib.ExitStack() as stack:
        started, port = stack.enter_context(
            sites([(site, [host, GLOBAL_NAME]) for site, host in hosts.items()], ca, tmp_path)
        )
        by_name = {s.name: s for s in started}
        # As the lab serves it: each site's planned addresses answered as its address here.
        records = tuple(
            r.model_copy(update={"values": (by_name[str(r.set_identifier)].address,)})
            for r in planned.records
            if r.set_identifier  # the global name's (not the DNS authorization CNAMEs)
        )
        checks = tuple(fast(c, port=port, interval=INTERVAL) for c in planned.health_checks)
        config = dns.DnsConfig.for_edge(
            Edge(records=records, health_checks=checks),
            listen="127.0.0.1",
            port=0,
            events_file=tmp_path / "events.jsonl",
            static_names={hosts[s.name]: ([s.address], SITE_TTL) for s in started},
            seed=5,
        )
        server = stack.enter_context(dns_server(config, tmp_path))
        every = sorted(s.address for s in started)
        for tcp in (False, True):
            reply = query(server.address, GLOBAL_NAME, tcp=tcp)
            assert reply.header.rcode == RCODE.NOERROR and not reply.header.tc
            assert sorted(
                (str(r.rname).rstrip("."), QTYPE[r.rtype], r.ttl, str(r.rdata)) for r in reply.rr
            ) == [(GLOBAL_NAME, "A", ttl, address) for address in every]
        # A new random order for each query (three addresses: six orders).
        orders = Counter(tuple(a_records(query(server.address, GLOBAL_NAME))) for _ in range(120))
        assert len(orders) >= 4 and {o[0] for o in orders} == set(every)
        assert sorted(CachingResolver(server.address).resolve(GLOBAL_NAME)) == every
        start = dns.wait_event(server.events_file, lambda e: e.get("event") == "routing", timeout=10)
        assert start["routing"][GLOBAL_NAME] == every  # the addresses, not names

        gcp = by_name["gcp-prod"]
        gcp.stop()
        down = dns.wait_event(
            server.events_file,
            lambda e: e.get("event") == "health" and e["site"] == "gcp-prod" and e["healthy"] is False,
            timeout=30,
        )
        # Written as its own line after the health event: waited for, not read at once.
        routing = dns.wait_event(
            server.events_file,
            lambda e: e.get("event") == "routing" and e["t"] >= down["t"],
            timeout=10,
        )
        assert routing["cause"] == "gcp-prod"
        assert routing["routing"][GLOBAL_NAME] == [a for a in every if a != gcp.address]
        for tcp in (False, True):
            answers = {
                tuple(sorted(a_records(query(server.address, GLOBAL_NAME, tcp=tcp)))) for _ in range(20)
            }
            assert answers == {tuple(a for a in every if a != gcp.address)}


def test_a_multivalue_answer_too_big_for_udp_comes_whole_over_tcp(tmp_path: Path) -> None:
    # Eight records of six addresses: 48 A records, over the 512 bytes of a plain UDP reply.
    records = [record(f"s{i}", [f"10.9.{i}.{j + 1}" for j in range(6)]) for i in range(8)]
    every = sorted(v for r in records for v in r.values)
    config = dns.DnsConfig.for_edge(
        Edge(records=tuple(records), health_checks=()), listen="127.0.0.1", port=0, events_file=tmp_path / "e"
    )
    with dns_server(config, tmp_path) as server:
        reply = query(server.address, "api.test")
        assert reply.header.tc and not reply.rr  # truncated: retry over TCP
        assert sorted(a_records(query(server.address, "api.test", tcp=True))) == every
        # The resolver does that retry by itself.
        assert sorted(CachingResolver(server.address).resolve("api.test")) == every


# --- several addresses: the async transport races them as httpx does ----------------------------------


@contextlib.contextmanager
def silent_port(address: str, port: int) -> Iterator[None]:
    """``address:port`` drops every SYN: a listener with backlog 0 whose one queue slot is taken
    by a connection it never accepts (Linux then drops new SYNs; the client would retry after
    1 s, 3 s, ...), as a host that is down or firewalled behaves."""
    with socket.socket() as listener, socket.socket() as filler, socket.socket() as probe:
        listener.bind((address, port))
        listener.listen(0)
        filler.connect((address, port))
        probe.settimeout(0.3)
        with pytest.raises(TimeoutError):
            probe.connect((address, port))  # it really does not answer
        yield


async def connect_time(
    resolver: CachingResolver, name: str, port: int, timeout: float = 5.0, dial: Dial = "race"
) -> tuple[float, str]:
    """How long the async transport's connect to ``name`` takes, and the address it reached."""
    transport = AsyncResolvingTransport(resolver, verify=ssl.create_default_context(), dial=dial)
    backend = transport._pool._network_backend
    started = time.monotonic()
    stream = await backend.connect_tcp(name, port, timeout=timeout)
    took = time.monotonic() - started
    try:
        return took, stream.get_extra_info("server_addr")[0]
    finally:
        await stream.aclose()


async def test_async_transport_races_addresses_and_sync_tries_them_in_turn(
    tmp_path: Path, ca: TestCA
) -> None:
    silent, refused, first, second = loopback_block(4)
    port = common_free_port([silent, refused, first, second])
    names = {
        "slow.lab.test": [silent, first],  # the first address does not answer
        "refused.lab.test": [refused, first],  # the first address refuses
        "ordered.lab.test": [second, first],  # both answer: the DNS's order
        "down.lab.test": [silent, refused],  # nothing answers
    }
    config = static_config(tmp_path, {n: (addrs, 300) for n, addrs in names.items()})
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(dns_server(config, tmp_path))
        for address in (first, second):
            site = Site(address, address, port, ca.issue(list(names), tmp_path, address)).start()
            stack.callback(site.stop)
        stack.enter_context(silent_port(silent, port))
        resolver = CachingResolver(server.address)
        for name in names:
            resolver.resolve(name)  # cached: the timings below are the connects alone

        # A silent first address costs the happy-eyeballs delay, not its connect timeout (5 s):
        # tried in turn, the second address would be reached only after 5 s.
        took, reached = await connect_time(resolver, "slow.lab.test", port)
        assert reached == first and 0.25 <= took < 5.0, took
        # A refused first address falls through to the next; two live ones: the DNS's order.
        took, reached = await connect_time(resolver, "refused.lab.test", port)
        assert reached == first, took
        took, reached = await connect_time(resolver, "ordered.lab.test", port)
        assert reached == second, took
        # All fail: the last failure (the silent address's timeout, after the refusal).
        with pytest.raises(httpcore.ConnectTimeout):
            await connect_time(resolver, "down.lab.test", port, timeout=0.5)

        # Through httpx, with TLS and HTTP on the name.
        transport = AsyncResolvingTransport(resolver, verify=ca.client_context())
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            response = await client.get(f"https://slow.lab.test:{port}/")
        assert response.text == f"{first}\n"
        # The sync transport stays sequential, as socket.create_connection: the silent address
        # takes its whole connect timeout before the next is tried.
        sync = ResolvingTransport(resolver, verify=ca.client_context())
        with httpx.Client(transport=sync, timeout=httpx.Timeout(5, connect=1.0)) as client:
            started = time.monotonic()
            response = client.get(f"https://slow.lab.test:{port}/")
        assert response.text == f"{first}\n" and time.monotonic() - started >= 1.0

        # The async transport asked to dial in turn does the same (the load's dial: sequential).
        took, reached = await connect_time(resolver, "slow.lab.test", port, timeout=1.0, dial="sequential")
        assert reached == first and took >= 1.0, took
        took, reached = await connect_time(resolver, "ordered.lab.test", port, dial="sequential")
        assert reached == second, took
        with pytest.raises(httpcore.ConnectError):  # the last failure: the refusal, after the timeout
            await connect_time(resolver, "down.lab.test", port, timeout=0.5, dial="sequential")
