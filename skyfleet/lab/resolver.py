"""A client's DNS for the load generator: names resolved through the lab's DNS server, every
record cached for its own TTL, as a caching stub resolver (systemd-resolved) keeps them.

So the load generator sees a failover no earlier than a real client honouring the TTL would:
the global name's CNAME stays cached until its TTL ends, whatever the server answers meanwhile;
then the next connection asks again and follows the new CNAME. Nothing is served stale after
its TTL, and a failed name (NXDOMAIN) is not cached (the lab's answers carry no SOA).

It plugs into httpx at the connection level (:class:`ResolvingTransport`,
:class:`AsyncResolvingTransport`): only the TCP connect goes to the resolved address. The URL,
the connection pool's key, the Host header, SNI and the certificate check all keep the name
the client asked for, so the site's certificate is verified for that name, and a pooled
keep-alive connection is reused across a DNS change exactly as a real client's would be.

A name with several addresses (a multivalue answer) is connected to as httpx connects to one it
resolves itself. The async transport behaves as httpx's own AnyIO backend (``anyio.connect_tcp``):
it races the addresses, RFC 8305 style ("happy eyeballs"): the first address first, the next
one 0.25 s later or as soon as the previous attempt fails, the first connection wins and the
others are closed, so an address that does not answer costs a client 0.25 s, not a connect
timeout. The sync transport tries them one after another, each with the whole connect timeout,
as httpx's sync backend does (``socket.create_connection``); the async one does the same when
asked to (``dial="sequential"``), to stand for such clients in an async load.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import anyio
import httpcore
import httpx
from dnslib import QTYPE, RCODE, DNSRecord

MAX_HOPS = 8
# resolv.conf's defaults: 5 s per try, 2 tries.
DEFAULT_TIMEOUT = 5.0
DEFAULT_ATTEMPTS = 2
# anyio.connect_tcp's default: the next address is tried after this long without a result.
HAPPY_EYEBALLS_DELAY = 0.25
# How a client connects to a name's addresses: raced (RFC 8305), or one after another, each with
# the whole connect timeout (``socket.create_connection``).
Dial = Literal["race", "sequential"]


class ResolveError(OSError):
    """A name could not be resolved; the message names it and why."""


class NameNotFound(ResolveError):
    """The server answered NXDOMAIN."""


@dataclass(frozen=True)
class _Entry:
    values: tuple[str, ...]
    expires: float


def _normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class CachingResolver:
    """Resolves IPv4 addresses through one DNS server, caching each record set for its TTL.

    ``clock`` (monotonic seconds) is what the TTLs count against.
    """

    def __init__(
        self,
        server: tuple[str, int],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        clock: Callable[[], float] = time.monotonic,
        allowed: ipaddress.IPv4Network | None = None,
    ) -> None:
        self.server = server
        # Answers outside this network are refused: a client of the lab reaches only the lab.
        self.allowed = allowed
        self.timeout = timeout
        self.attempts = attempts
        self.clock = clock
        self._cache: dict[tuple[str, int], _Entry] = {}
        self._lock = threading.Lock()
        self.queries = 0

    @property
    def _where(self) -> str:
        return f"{self.server[0]}:{self.server[1]}"

    # --- cache --------------------------------------------------------------------------

    def flush(self) -> None:
        with self._lock:
            self._cache.clear()

    def cached(self, name: str) -> list[str] | None:
        """The addresses ``name`` resolves to from the cache alone, or None."""
        addresses, _ = self._walk(_normalise(name), {})
        return addresses

    def _walk(self, name: str, fresh: dict[tuple[str, int], tuple[str, ...]]) -> tuple[list[str] | None, str]:
        """(addresses, name) from the cache and ``fresh`` records; None and the name whose
        record is missing when the chain is not complete."""
        now = self.clock()
        current = name
        for _ in range(MAX_HOPS):
            cname = self._get((current, QTYPE.CNAME), now) or fresh.get((current, QTYPE.CNAME))
            if cname:
                current = cname[0]
                continue
            a = self._get((current, QTYPE.A), now) or fresh.get((current, QTYPE.A))
            return (list(a), current) if a else (None, current)
        raise ResolveError(f"{name}: CNAME chain longer than {MAX_HOPS}")

    def _get(self, key: tuple[str, int], now: float) -> tuple[str, ...] | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if now >= entry.expires:
                del self._cache[key]
                return None
            return entry.values

    def _store(self, reply: DNSRecord) -> dict[tuple[str, int], tuple[str, ...]]:
        """Cache the reply's answer records (each set for its smallest TTL); return them all,
        TTL 0 included, so this resolution can use what may not be cached."""
        sets: dict[tuple[str, int], tuple[list[str], int]] = {}
        for rr in reply.rr:
            if rr.rtype not in (QTYPE.A, QTYPE.CNAME):
                continue
            key = (_normalise(str(rr.rname)), rr.rtype)
            values, ttl = sets.get(key, ([], rr.ttl))
            value = _normalise(str(rr.rdata)) if rr.rtype == QTYPE.CNAME else str(rr.rdata)
            sets[key] = ([*values, value], min(ttl, rr.ttl))
        now = self.clock()
        with self._lock:
            for key, (values, ttl) in sets.items():
                if ttl > 0:
                    self._cache[key] = _Entry(tuple(values), now + ttl)
        return {k: tuple(v) for k, (v, _) in sets.items()}

    # --- resolution ---------------------------------------------------------------------

    def _step(self, name: str, reply: DNSRecord, fresh: dict[tuple[str, int], tuple[str, ...]]) -> None:
        if reply.header.rcode == RCODE.NXDOMAIN:
            raise NameNotFound(f"{name}: no such name (NXDOMAIN from {self._where})")
        if reply.header.rcode != RCODE.NOERROR:
            raise ResolveError(f"{name}: the server answered {RCODE[reply.header.rcode]}")
        before = dict(fresh)
        fresh.update(self._store(reply))
        if fresh == before:
            raise ResolveError(f"{name}: no IPv4 address (empty answer)")

    def _inside(self, name: str, addresses: list[str]) -> list[str]:
        if self.allowed is not None:
            outside = [a for a in addresses if ipaddress.IPv4Address(a) not in self.allowed]
            if outside:
                raise ResolveError(f"{name}: answered {outside}, outside the allowed network {self.allowed}")
        return addresses

    def resolve(self, name: str) -> list[str]:
        """The IPv4 addresses of ``name`` (cache first, then the server)."""
        name = _normalise(name)
        fresh: dict[tuple[str, int], tuple[str, ...]] = {}
        for _ in range(MAX_HOPS):
            addresses, missing = self._walk(name, fresh)
            if addresses:
                return self._inside(name, addresses)
            self._step(missing, self._query(missing), fresh)
        raise ResolveError(f"{name}: no address after {MAX_HOPS} queries")

    async def resolve_async(self, name: str) -> list[str]:
        """As :meth:`resolve`, without blocking the event loop."""
        name = _normalise(name)
        fresh: dict[tuple[str, int], tuple[str, ...]] = {}
        for _ in range(MAX_HOPS):
            addresses, missing = self._walk(name, fresh)
            if addresses:
                return self._inside(name, addresses)
            self._step(missing, await self._query_async(missing), fresh)
        raise ResolveError(f"{name}: no address after {MAX_HOPS} queries")

    def _request(self, name: str) -> DNSRecord:
        self.queries += 1
        return DNSRecord.question(name, "A")

    def _match(self, query: DNSRecord, data: bytes) -> DNSRecord | None:
        try:
            reply = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types on garbage
            return None
        if reply.header.id != query.header.id or reply.q != query.q:
            return None
        return reply

    def _query(self, name: str) -> DNSRecord:
        query = self._request(name)
        packet = bytes(query.pack())
        for _ in range(self.attempts):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.server)
                try:
                    sock.send(packet)
                    deadline = time.monotonic() + self.timeout
                    while True:
                        sock.settimeout(max(0.001, deadline - time.monotonic()))
                        reply = self._match(query, sock.recv(65535))
                        if reply is not None:
                            break
                except TimeoutError:
                    continue
                except OSError as exc:  # e.g. ICMP port unreachable: nothing listens
                    raise ResolveError(f"{name}: DNS server {self._where}: {exc}") from None
            if reply.header.tc:
                return self._query_tcp(query)
            return reply
        raise ResolveError(f"{name}: DNS server {self._where} did not answer ({self.attempts} tries)")

    def _query_tcp(self, query: DNSRecord) -> DNSRecord:
        packet = bytes(query.pack())
        try:
            with socket.create_connection(self.server, timeout=self.timeout) as sock:
                sock.sendall(struct.pack("!H", len(packet)) + packet)
                size = struct.unpack("!H", _recv_exactly(sock, 2))[0]
                reply = self._match(query, _recv_exactly(sock, size))
        except OSError as exc:
            raise ResolveError(f"{query.q.qname}: DNS over TCP: {exc}") from None
        if reply is None:
            raise ResolveError(f"{query.q.qname}: DNS over TCP: a reply that does not match the query")
        return reply

    async def _query_async(self, name: str) -> DNSRecord:
        query = self._request(name)
        packet = bytes(query.pack())
        for _ in range(self.attempts):
            try:
                with anyio.fail_after(self.timeout):
                    async with await anyio.create_connected_udp_socket(
                        self.server[0], self.server[1], family=socket.AF_INET
                    ) as sock:
                        await sock.send(packet)
                        while True:
                            reply = self._match(query, await sock.receive())
                            if reply is not None:
                                break
            except TimeoutError:
                continue
            except OSError as exc:
                raise ResolveError(f"{name}: DNS server {self._where}: {exc}") from None
            if reply.header.tc:
                return await anyio.to_thread.run_sync(self._query_tcp, query)
            return reply
        raise ResolveError(f"{name}: DNS server {self._where} did not answer ({self.attempts} tries)")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        data += chunk
    return data


# --- httpx -----------------------------------------------------------------------------------------


class _Backend(httpcore.NetworkBackend):
    """httpcore's sync backend, with the host name resolved by the caching resolver: its
    addresses are tried in order, one at a time, each with the whole connect timeout, as
    ``socket.create_connection`` (which httpcore's sync backend calls) tries them."""

    def __init__(self, resolver: CachingResolver) -> None:
        self.resolver = resolver
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = [host] if _is_ip(host) else self.resolver.resolve(host)
        except ResolveError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception | None = None
        for address in addresses:  # in order, as socket.create_connection tries them
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return self.inner.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    """httpcore's AnyIO backend, with the host name resolved by the caching resolver, and its
    addresses raced as httpx's own AnyIO backend races the addresses it resolves
    (``anyio.connect_tcp``, RFC 8305 "happy eyeballs"): attempts start in the order the DNS
    gave, each ``happy_eyeballs_delay`` after the previous one or as soon as it fails; the
    first to connect wins and the others are cancelled or closed. As httpcore's backend does,
    one connect timeout bounds the whole race (ConnectTimeout); when every attempt fails before
    it, the last failure is raised.

    ``dial="sequential"`` connects as the sync backend does instead: one address after another,
    each with the whole connect timeout."""

    def __init__(
        self,
        resolver: CachingResolver,
        *,
        happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY,
        dial: Dial = "race",
    ) -> None:
        self.resolver = resolver
        self.happy_eyeballs_delay = happy_eyeballs_delay
        self.dial = dial
        self.inner: httpcore.AsyncNetworkBackend = httpcore.AnyIOBackend()  # type: ignore[assignment]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = [host] if _is_ip(host) else await self.resolver.resolve_async(host)
        except ResolveError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        options = list(socket_options or ())
        if self.dial == "sequential":
            return await self._one_after_another(addresses, port, timeout, local_address, options)
        winner: httpcore.AsyncNetworkStream | None = None
        failures: list[Exception] = []

        async def attempt(address: str, finished: anyio.Event) -> None:
            nonlocal winner
            try:
                stream = await self.inner.connect_tcp(address, port, None, local_address, options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failures.append(exc)
                return
            finally:
                finished.set()  # a failure starts the next attempt at once
            if winner is None:
                winner = stream
                race.cancel_scope.cancel()  # the other attempts lost
            else:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()

        try:
            with anyio.fail_after(timeout):
                async with anyio.create_task_group() as race:
                    for address in addresses:
                        finished = anyio.Event()
                        race.start_soon(attempt, address, finished)
                        with anyio.move_on_after(self.happy_eyeballs_delay):
                            await finished.wait()
        except TimeoutError:
            if winner is not None:
                with anyio.CancelScope(shield=True):
                    await winner.aclose()
            raise httpcore.ConnectTimeout(
                f"{host}: no address {addresses} connected within {timeout} s"
            ) from None
        except BaseException:
            if winner is not None:
                with anyio.CancelScope(shield=True):
                    await winner.aclose()
            raise
        if winner is None:
            raise failures[-1]
        return winner

    async def _one_after_another(
        self,
        addresses: list[str],
        port: int,
        timeout: float | None,
        local_address: str | None,
        options: list[httpcore.SOCKET_OPTION],
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def _pool_args(verify: ssl.SSLContext, limits: httpx.Limits, http2: bool, retries: int) -> dict[str, object]:
    return {
        "ssl_context": verify,
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "http1": True,
        "http2": http2,
        "retries": retries,
    }


class ResolvingTransport(httpx.HTTPTransport):
    """httpx's transport, connecting through ``resolver``. ``verify`` is the context that
    checks the server's certificate (e.g. one trusting the lab CA); retries stay 0 by default,
    as a client of the deployed edge gets no retry across sites."""

    def __init__(
        self,
        resolver: CachingResolver,
        *,
        verify: ssl.SSLContext,
        limits: httpx.Limits = httpx.Limits(),  # noqa: B008  # immutable
        http2: bool = False,
        retries: int = 0,
    ) -> None:
        super().__init__(verify=verify, limits=limits, http2=http2, retries=retries, trust_env=False)
        # httpx takes no network backend, so its pool is rebuilt with the same settings and ours.
        self._pool = httpcore.ConnectionPool(
            **_pool_args(verify, limits, http2, retries),  # type: ignore[arg-type]
            network_backend=_Backend(resolver),
        )


class AsyncResolvingTransport(httpx.AsyncHTTPTransport):
    """The async twin of :class:`ResolvingTransport` (for ``httpx.AsyncClient``); ``dial`` says
    how it connects to a name's addresses."""

    def __init__(
        self,
        resolver: CachingResolver,
        *,
        verify: ssl.SSLContext,
        limits: httpx.Limits = httpx.Limits(),  # noqa: B008  # immutable
        http2: bool = False,
        retries: int = 0,
        dial: Dial = "race",
    ) -> None:
        super().__init__(verify=verify, limits=limits, http2=http2, retries=retries, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            **_pool_args(verify, limits, http2, retries),  # type: ignore[arg-type]
            network_backend=_AsyncBackend(resolver, dial=dial),
        )


__all__ = [
    "AsyncResolvingTransport",
    "CachingResolver",
    "Dial",
    "NameNotFound",
    "ResolveError",
    "ResolvingTransport",
]
