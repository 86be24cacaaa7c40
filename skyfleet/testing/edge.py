"""The lab edge without the lab, for its tests and its benchmark: the edge plan (planned once
per process from the shipped stacks), a throwaway CA, small real HTTPS servers playing sites,
and the lab DNS server run as its own process."""

from __future__ import annotations

import contextlib
import datetime
import functools
import http.server
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import QTYPE, DNSRecord

from skyfleet.lab import dns
from skyfleet.lab.route53 import Edge, HealthCheckSpec, edge_from_plan
from skyfleet.plan import Plan, plan_stack

ROOT = Path(__file__).resolve().parents[2]
EDGE_STACK = "edge-prod"
SITE_STACKS = ("aws-prod", "gcp-prod", "onprem-prod")
GLOBAL_NAME = "api.agents.example.com"


# --- the edge plan ---------------------------------------------------------------------------------


@functools.cache
def site_outputs() -> dict[str, dict[str, Any]]:
    return {s: plan_stack(ROOT, s).outputs for s in SITE_STACKS}


@functools.cache
def edge_config() -> dict[str, Any]:
    """The shipped edge stack's ``skyfleet:edge`` section."""
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{EDGE_STACK}.yaml").read_text())
    return doc["config"]["skyfleet:edge"]


def _edge_plan(variant: str) -> Plan:
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{EDGE_STACK}.yaml").read_text())
    edge = doc["config"]["skyfleet:edge"]
    if variant == "weighted":
        edge["routing"] = "weighted"
    elif variant == "weighted-zero":
        edge["routing"] = "weighted"
        edge["sites"][2]["weight"] = 0
    elif variant == "two-sites":
        edge["sites"] = edge["sites"][:2]
    elif variant == "reordered":
        edge["sites"][0]["priority"], edge["sites"][1]["priority"] = 2, 1
    elif variant != "shipped":
        raise ValueError(variant)
    if variant == "shipped":
        return plan_stack(ROOT, EDGE_STACK, known_outputs=site_outputs())
    # The shipped project with one more stack file: the edge-prod config, changed.
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
        (project / "infra").symlink_to(ROOT / "infra")
        (project / "stacks").mkdir()
        stack = f"edge-{variant}"
        (project / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(doc))
        return plan_stack(project, stack, known_outputs=site_outputs())


def edge_plan(variant: str = "shipped") -> Plan:
    """The edge stack's offline plan: shipped, or with weighted routing ("weighted"), weighted
    with the third site at weight 0 ("weighted-zero"), with the first two sites only
    ("two-sites"), or with the first two sites' priorities swapped ("reordered")."""
    return _edge_plan(variant)


def edge(variant: str = "shipped") -> Edge:
    return edge_from_plan(edge_plan(variant).resources)


def fast(check: HealthCheckSpec, *, port: int, interval: float = 0.2) -> HealthCheckSpec:
    """A planned check with a test's port and a short interval (said here, never implied)."""
    return check.model_copy(update={"port": port, "request_interval": interval})


# --- TLS -------------------------------------------------------------------------------------------


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TestCA:
    """A throwaway CA that issues server certificates for host names."""

    __test__ = False

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.pem.decode())

    def issue(self, hosts: list[str], directory: Path, stem: str) -> tuple[Path, Path]:
        """(cert file, key file) of a certificate for ``hosts`` signed by this CA."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _write_pair(directory, stem, cert, key)


def self_signed_expired(host: str, directory: Path, stem: str) -> tuple[Path, Path]:
    """A certificate no client would accept: self-signed, for ``host``, expired yesterday."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write_pair(directory, stem, cert, key)


def _write_pair(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_key_pem(key))
    return cert_file, key_file


# --- sites -----------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's name
        assert isinstance(self.server, _HttpsServer)
        site = self.server.site
        site.requests.append(
            {"path": self.path, "host": self.headers.get("Host"), "agent": self.headers.get("User-Agent")}
        )
        status = site.status if self.path == "/readyz" else 200
        body = f"{site.name}\n".encode()
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _HttpsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    site: Site

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS in the request's own thread, so one slow handshake holds up nobody else.
        conns = self.site.connections
        conns.add(request)
        tls: socket.socket | None = None
        try:
            tls = self.site.context.wrap_socket(request, server_side=True)  # takes over the socket
            conns.add(tls)
            super().finish_request(tls, client_address)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conns.discard(request)
            if tls is not None:
                conns.discard(tls)


class Site:
    """A small real HTTPS server: answers every path with its name, and ``/readyz`` with
    ``status``; records the SNI names and requests it got."""

    def __init__(self, name: str, address: str, port: int, cert: tuple[Path, Path]) -> None:
        self.name, self.address, self.port = name, address, port
        self.status = 200
        self.sni: list[str | None] = []
        self.requests: list[dict[str, Any]] = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*cert)
        self.context.sni_callback = lambda _sock, server_name, _ctx: self.sni.append(server_name)
        self.connections: set[socket.socket] = set()
        self._server: _HttpsServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Site:
        server = _HttpsServer((self.address, self.port), _Handler)
        server.site = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """The site is gone: new connections are refused, open ones are cut."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)


def loopback_block(count: int) -> list[str]:
    """``count`` loopback addresses in a random 127.x.y.0/24 block."""
    base = f"127.{random.randrange(60, 250)}.{random.randrange(1, 250)}"
    return [f"{base}.{i + 1}" for i in range(count)]


def common_free_port(addresses: list[str]) -> int:
    """A TCP port free on every one of ``addresses`` now."""
    for _ in range(50):
        port = random.randrange(20000, 32000)
        socks = []
        try:
            for address in addresses:
                s = socket.socket()
                socks.append(s)
                s.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no port free on all of " + ", ".join(addresses))


@contextlib.contextmanager
def sites(
    names_hosts: list[tuple[str, list[str]]], ca: TestCA, directory: Path
) -> Iterator[tuple[list[Site], int]]:
    """Started sites (name, certificate host names) on loopback addresses sharing one port."""
    addresses = loopback_block(len(names_hosts))
    port = common_free_port(addresses)
    started: list[Site] = []
    try:
        for (name, hosts), address in zip(names_hosts, addresses, strict=True):
            started.append(Site(name, address, port, ca.issue(hosts, directory, name)).start())
        yield started, port
    finally:
        for site in started:
            site.stop()


# --- the DNS server process ------------------------------------------------------------------------


class DnsProcess:
    """``python -m skyfleet.lab.dns`` on a config file, as the lab runs it."""

    def __init__(self, config: dns.DnsConfig, directory: Path) -> None:
        self.config_path = directory / "dns.json"
        self.events_file = config.events_file
        self.digest = dns.write_config(self.config_path, config)
        self.log = open(directory / "dns.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            dns.command(self.config_path), stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        ready = dns.wait_ready(
            self.events_file, self.proc.pid, timeout=20, alive=lambda: self.proc.poll() is None
        )
        self.address = (str(config.listen), int(ready["port"]))

    def update(self, config: dns.DnsConfig) -> dict[str, Any]:
        digest = dns.write_config(self.config_path, config)
        return dns.reload(self.proc.pid, self.events_file, digest)

    def events(self) -> list[dict[str, Any]]:
        return dns.read_events(self.events_file)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@contextlib.contextmanager
def dns_server(config: dns.DnsConfig, directory: Path) -> Iterator[DnsProcess]:
    server = DnsProcess(config, directory)
    try:
        yield server
    finally:
        server.stop()
        assert server.proc.returncode == 0, (directory / "dns.log").read_text()


def query(server: tuple[str, int], name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    """One query, no cache: what the server answers now."""
    data = DNSRecord.question(name, qtype).send(server[0], server[1], tcp=tcp, timeout=5)
    return DNSRecord.parse(data)


def a_records(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def cname_of(reply: DNSRecord, name: str) -> str | None:
    return next(
        (
            str(rr.rdata).rstrip(".")
            for rr in reply.rr
            if rr.rtype == QTYPE.CNAME and str(rr.rname).rstrip(".") == name
        ),
        None,
    )
