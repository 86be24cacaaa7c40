"""The lab's DNS server: the edge's Route 53 zone, answered from its records and live health
checks, plus the lab's static names. UDP and TCP; it never forwards a query anywhere.

- **Zone names** (the global name and its failover tiers) are answered as Route 53 would, and
  a CNAME is followed to its target's A records in the same answer, as a recursive resolver
  gives them to a client: ``api.example. 30 CNAME site.example.`` + ``site.example. 60 A ...``.
  A multivalue name answers several A records at once (every healthy site's addresses, in a
  new random order each time); one too large for a UDP reply is truncated (TC) for a retry
  over TCP, which carries it whole.
- **Static names** (a site's endpoint host, a managed service's endpoint) map to IPv4
  addresses with a TTL each; the lab registers them and changes them while the server runs.
- Any other name is NXDOMAIN; a known name without the asked type is an empty NOERROR answer.

Run it as a process: ``python -m skyfleet.lab.dns --config FILE``. The config is JSON written
by the lab (:class:`DnsConfig`). Health-check probes, checker verdicts, status changes, where
each zone name routes after a change (``routing``: per name, the values its answers may hold
now: a CNAME's target, or a multivalue name's addresses), readiness and reloads are appended
as JSON lines (with ``t`` in epoch seconds and ``time`` in ISO 8601) to ``events_file``.

Updates at run time: the lab rewrites the config file (:func:`write_config`, atomic) and sends
SIGHUP; the server re-reads it and logs ``reload`` with the file's digest (or
``reload-failed``, keeping the config it had). The file stays the one source of truth, so a
restarted server answers what the lab last wrote; a signal reaches the server by pid whatever
network namespace it runs in; and the digest in the events file is the acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import signal
import struct
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from dnslib import AAAA, CNAME, QTYPE, RCODE, RD, RR, A, DNSHeader, DNSRecord
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skyfleet.lab.route53 import (
    Edge,
    EdgePlanError,
    Event,
    HealthCheckers,
    HealthCheckSpec,
    RecordSpec,
    Zone,
    normalise,
    timestamp,
)

MAX_CNAME_HOPS = 8
UDP_PAYLOAD = 512  # without EDNS0, a UDP answer is at most 512 bytes (else TC=1, retry on TCP)


class DnsConfigError(ValueError):
    """The DNS server's config is invalid; the message names the file and the field."""


class StaticName(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    addresses: tuple[ipaddress.IPv4Address, ...] = Field(min_length=1)
    ttl: int = Field(ge=0, le=2**31 - 1)


class DnsConfig(BaseModel):
    """What the lab writes for the DNS server (JSON)."""

    model_config = ConfigDict(extra="forbid")

    listen: ipaddress.IPv4Address
    port: int = Field(ge=0, le=65535, description="0: any free port (reported in the ready event)")
    events_file: Path
    records: list[RecordSpec] = Field(default_factory=list)
    health_checks: list[HealthCheckSpec] = Field(default_factory=list)
    static_names: dict[str, StaticName] = Field(default_factory=dict)
    log_probes: bool = True
    seed: int | None = Field(default=None, description="seeds weighted choices and checker phases")

    @field_validator("static_names")
    @classmethod
    def _lower(cls, names: dict[str, StaticName]) -> dict[str, StaticName]:
        return {normalise(k): v for k, v in names.items()}

    @model_validator(mode="after")
    def _consistent(self) -> DnsConfig:
        try:
            zone = self.edge().zone()
        except EdgePlanError as exc:
            raise ValueError(str(exc)) from None
        clash = sorted(n for n in self.static_names if n in zone)
        if clash:
            raise ValueError(f"static_names: {clash} are also zone records; a name has one source")
        ids = [c.id for c in self.health_checks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"health_checks: ids must be unique, got {ids}")
        return self

    def edge(self) -> Edge:
        return Edge(records=tuple(self.records), health_checks=tuple(self.health_checks))

    @classmethod
    def for_edge(
        cls,
        edge: Edge,
        *,
        listen: str,
        port: int,
        events_file: Path,
        static_names: Mapping[str, tuple[list[str], int]] | None = None,
        **kw: Any,
    ) -> DnsConfig:
        """A config serving ``edge`` (from :func:`~skyfleet.lab.route53.edge_from_plan`)."""
        return cls(
            listen=ipaddress.IPv4Address(listen),
            port=port,
            events_file=events_file,
            records=list(edge.records),
            health_checks=list(edge.health_checks),
            static_names={
                n: StaticName(addresses=tuple(ipaddress.IPv4Address(a) for a in addrs), ttl=ttl)
                for n, (addrs, ttl) in (static_names or {}).items()
            },
            **kw,
        )


def load_config(path: Path) -> tuple[DnsConfig, str]:
    """The config in ``path`` and the sha256 of its bytes; DnsConfigError names file and field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DnsConfigError(f"{path}: cannot read the DNS config: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DnsConfigError(f"{path}: not JSON: {exc}") from None
    try:
        config = DnsConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors()
        )
        raise DnsConfigError(f"{path}: {problems}") from None
    return config, hashlib.sha256(raw).hexdigest()


def write_config(path: Path, config: DnsConfig) -> str:
    """Write ``config`` atomically (a reader never sees half a file); return its digest."""
    data = config.model_dump_json(indent=2).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


# --- answering -------------------------------------------------------------------------------------


def _rdata(rtype: str, value: str) -> RD:
    if rtype == "CNAME":
        return CNAME(value + ".")
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    raise DnsConfigError(f"record type {rtype} is not served by the lab's DNS (CNAME, A, AAAA are)")


class Answerer:
    """Builds answers from a config and the health checks' current state."""

    def __init__(self, config: DnsConfig, health: Callable[[str], bool], rng: random.Random) -> None:
        self.config = config
        self.zone: Zone = config.edge().zone()
        self.static = config.static_names
        self.health = health
        self.rng = rng

    def addresses(self, name: str) -> list[str]:
        """IPv4 addresses of ``name`` as a client would get them (zone chains followed)."""
        rcode, rrs = self.resolve(name, QTYPE.A)
        return [str(rr.rdata) for rr in rrs if rr.rtype == QTYPE.A] if rcode == RCODE.NOERROR else []

    def resolve(self, qname: str, qtype: int) -> tuple[int, list[RR]]:
        """(rcode, answer records) for one question."""
        name = normalise(qname)
        answers: list[RR] = []
        for _ in range(MAX_CNAME_HOPS):
            if name in self.zone:
                records = self.zone.answer(name, self.health, self.rng)
                rrs = [
                    RR(a.name + ".", getattr(QTYPE, a.type), rdata=_rdata(a.type, a.value), ttl=a.ttl)
                    for a in records
                ]
                if records and records[0].type == "CNAME":
                    answers += rrs
                    if qtype in (QTYPE.CNAME, QTYPE.ANY):
                        return RCODE.NOERROR, answers
                    name = records[0].value  # a recursive resolver follows the CNAME
                    continue
                if qtype == QTYPE.ANY or (records and qtype == getattr(QTYPE, records[0].type)):
                    answers += rrs
                return RCODE.NOERROR, answers
            static = self.static.get(name)
            if static is not None:
                if qtype in (QTYPE.A, QTYPE.ANY):
                    answers += [
                        RR(name + ".", QTYPE.A, rdata=A(str(ip)), ttl=static.ttl) for ip in static.addresses
                    ]
                return RCODE.NOERROR, answers  # another type: NOERROR without data
            # Unknown name (or a CNAME to one): NXDOMAIN, with the chain that led there.
            return RCODE.NXDOMAIN, answers
        return RCODE.SERVFAIL, answers

    def handle(self, packet: bytes, *, udp: bool) -> bytes | None:
        try:
            query = DNSRecord.parse(packet)
        except Exception:  # dnslib raises several types on garbage
            if len(packet) < 2:
                return None
            header = DNSHeader(id=struct.unpack("!H", packet[:2])[0], qr=1, rcode=RCODE.FORMERR)
            return bytes(DNSRecord(header).pack())
        reply = DNSRecord(DNSHeader(id=query.header.id, qr=1, ra=1, rd=query.header.rd), q=query.q)
        if query.header.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP
            return bytes(reply.pack())
        if len(query.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return bytes(reply.pack())
        q = query.q
        rcode, answers = self.resolve(str(q.qname), q.qtype)
        reply.header.rcode = rcode
        for rr in answers:
            reply.add_answer(rr)
        data = bytes(reply.pack())
        if udp:
            limit = max(UDP_PAYLOAD, *(rr.edns_len for rr in query.ar if rr.rtype == QTYPE.OPT), 0)
            if len(data) > limit:
                header = DNSHeader(id=query.header.id, qr=1, ra=1, rd=query.header.rd, tc=1, rcode=rcode)
                return bytes(DNSRecord(header, q=q).pack())
        return data


# --- the server ----------------------------------------------------------------------------------


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (3.11's selector transport does not subclass DatagramTransport, but is one.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.answer(data, udp=True)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsServer:
    """The server, its health checkers and its events file, on one asyncio loop."""

    def __init__(self, config: DnsConfig, digest: str, config_path: Path | None = None) -> None:
        self.config = config
        self.digest = digest
        self.config_path = config_path
        self.rng = random.Random(config.seed)
        self._events = open(config.events_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.checkers = HealthCheckers(
            config.health_checks,
            resolve=lambda name: self.answerer.addresses(name),
            on_event=self._checker_event,
            log_probes=config.log_probes,
            rng=random.Random(None if config.seed is None else config.seed + 1),
        )
        self.answerer = Answerer(config, self.checkers.healthy, self.rng)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self.port = config.port
        self.queries = 0

    def log(self, event: str, **fields: Any) -> None:
        at = time.time()
        self.write({"event": event, "time": timestamp(at), "t": at, **fields})

    def write(self, event: Event) -> None:
        self._events.write(json.dumps(event, separators=(",", ":")) + "\n")

    def _checker_event(self, event: Event) -> None:
        self.write(event)
        if event["event"] == "health":
            # Where every zone name answers now: "when did the edge move traffic".
            self.log(
                "routing", cause=event["site"], routing=self.answerer.zone.routing(self.checkers.healthy)
            )

    def routing(self) -> dict[str, list[str]]:
        return self.answerer.zone.routing(self.checkers.healthy)

    def answer(self, packet: bytes, *, udp: bool) -> bytes | None:
        self.queries += 1
        return self.answerer.handle(packet, udp=udp)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                async with asyncio.timeout(10):  # an idle TCP client is dropped
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                reply = self.answer(data, udp=False)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host = str(self.config.listen)
        for _ in range(20):  # port 0: UDP picks a port; TCP must get the same one
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(host, self.config.port)
            )
            self._udp = transport
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, host, port)
            except OSError:
                transport.close()
                if self.config.port:
                    raise
                continue
            self.port = port
            break
        else:
            raise OSError(f"no port free for both UDP and TCP on {host}")
        self.checkers.start()
        self.log("ready", pid=os.getpid(), listen=host, port=self.port, digest=self.digest)
        self.log("routing", cause="start", routing=self.routing())

    async def reload(self) -> None:
        assert self.config_path is not None
        try:
            config, digest = load_config(self.config_path)
            if (config.listen, config.port) != (self.config.listen, self.config.port) and self.config.port:
                raise DnsConfigError(f"{self.config_path}: listen/port cannot change while running")
            if config.events_file != self.config.events_file:
                raise DnsConfigError(f"{self.config_path}: events_file cannot change while running")
        except DnsConfigError as exc:
            self.log("reload-failed", error=str(exc), digest=self.digest)
            return
        await self.checkers.update(config.health_checks)
        self.config, self.digest = config, digest
        self.answerer = Answerer(config, self.checkers.healthy, self.rng)
        self.checkers.log_probes = config.log_probes
        self.log("reload", digest=digest)
        self.log("routing", cause="reload", routing=self.routing())

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        await self.checkers.stop()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
        self.log("stopped", queries=self.queries)
        self._events.close()


async def _main(config_path: Path) -> int:
    config, digest = load_config(config_path)
    server = DnsServer(config, digest, config_path)
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyfleet.lab.dns", description="The lab's DNS server.")
    parser.add_argument("--config", type=Path, required=True, help="the JSON config the lab wrote")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args.config))
    except DnsConfigError as exc:
        print(f"skyfleet dns: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"skyfleet dns: cannot serve: {exc}", file=sys.stderr)
        return 1


# --- for the lab: start, reload, read events ---------------------------------------------------------


def command(config_path: Path) -> list[str]:
    """The argv that runs the server on ``config_path``."""
    return [sys.executable, "-m", "skyfleet.lab.dns", "--config", str(config_path)]


def read_events(path: Path) -> list[Event]:
    """Every event in the events file (a torn last line is skipped)."""
    events: list[Event] = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def wait_event(
    path: Path, match: Callable[[Event], bool], *, timeout: float, alive: Callable[[], bool] | None = None
) -> Event:
    """The first event that ``match``es, waiting up to ``timeout`` seconds (and only while
    ``alive()``, if given). Raises TimeoutError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        found = next((e for e in read_events(path) if match(e)), None)
        if found is not None:
            return found
        if alive is not None and not alive():
            raise TimeoutError(f"{path}: the DNS server exited before the awaited event")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no matching event within {timeout:g} s")
        time.sleep(0.02)


def wait_ready(
    events_file: Path, pid: int, *, timeout: float = 10.0, alive: Callable[[], bool] | None = None
) -> Event:
    """The ``ready`` event of the server process ``pid`` (it holds the bound port)."""
    return wait_event(
        events_file, lambda e: e.get("event") == "ready" and e.get("pid") == pid, timeout=timeout, alive=alive
    )


def reload(pid: int, events_file: Path, digest: str, *, timeout: float = 10.0) -> Event:
    """Make the server ``pid`` re-read its config; wait until it serves the config ``digest``
    (from :func:`write_config`). Raises DnsConfigError if it refused that file."""
    sent = time.time()
    os.kill(pid, signal.SIGHUP)

    def done(e: Event) -> bool:
        return (e.get("event") == "reload" and e.get("digest") == digest) or (
            e.get("event") == "reload-failed" and e.get("t", 0) >= sent
        )

    event = wait_event(events_file, done, timeout=timeout)
    if event["event"] == "reload-failed":
        raise DnsConfigError(event["error"])
    return event


def health_transitions(events: list[Event], site: str | None = None) -> list[Event]:
    """The health-check status changes (``event: health``), of one site if given."""
    return [e for e in events if e.get("event") == "health" and (site is None or e.get("site") == site)]


if __name__ == "__main__":
    sys.exit(main())
